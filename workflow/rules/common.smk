# Shared helpers: validate the config once (schema with defaults, from the package), resolve
# datasets, scenes and strategy runs, and build the list of final outputs.

import functools
import os
from pathlib import Path

from spatialfair import layout
from spatialfair.config import dataset_config, demo_folder, strategy_runs, validate_config
from spatialfair.errors import InputError
from spatialfair.settings import Settings

try:
    config = validate_config(config, source="config")
except InputError as exc:
    raise WorkflowError(f"Invalid configuration: {exc}") from None

SETTINGS = Settings.from_config(config)
RESULTS = SETTINGS.results
# Every results path comes from spatialfair.layout (names may be wildcards such as "{run}").
LAYOUT = layout.ResultsLayout(RESULTS)
# The validated config (defaults filled) is kept in this file; every command reads it. Rules
# take it as ancient() input (its timestamp never triggers reruns) and declare the config
# sections they depend on as params, so editing e.g. `training` retrains but does not re-tile.
CONFIG_FILE = str(LAYOUT.config_copy())
DATASETS = list(config["datasets"])
RUNS = {r.name: r for r in strategy_runs(config)}
# Replication (replicates.seeds x replicates.folds per strategy run, paired across runs).
REPLICATED = layout.is_replicated(SETTINGS)
REPS = {r.id: r for r in layout.replicates(SETTINGS)}
SEEDS = layout.replicate_seeds(SETTINGS)
# The replicate wildcard of results paths (None: the run folder itself), and its log folder.
REP = "{rep}" if REPLICATED else None
LOG_REP = "reps/{rep}/" if REPLICATED else ""
# replicates.one_job: one job per run and stage (train, predict, evaluate) handles all of the
# run's replicates in one process (workflow/rules/batching.smk).
ONE_JOB = REPLICATED and SETTINGS.replicates.one_job


def explain_job_faults(logs):
    """After a failed run: each job that ran out of memory or time, and what to raise."""
    from snakemake.logging import logger

    from spatialfair.job_faults import explain_log_files

    for message in explain_log_files(logs, Path.cwd()):
        logger.error(f"spatialfair: {message}")


def results_path(kind, *names):
    """A results path of LAYOUT as a string, e.g. results_path("model", "{dataset}", "{run}")."""
    return str(getattr(LAYOUT, kind)(*names))


ENV = "../envs/spatialfair.yaml"


def yaml_dump(obj):
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def sync_config_file():
    """Write CONFIG_FILE whenever its text differs from the validated config.

    Done when the workflow is read, not by a rule: a rule's params trigger relies on
    Snakemake's metadata in .snakemake/, and where that is missing (cleaned up, a results
    folder from another machine, an interrupted run) a copy written by a rule would stay stale
    while the rules reading it re-ran through their own params triggers with the old
    settings. Writing an identical text is skipped, so an unchanged config leaves the file
    (and its timestamp) alone.
    """
    from spatialfair.atomic import atomic_write_text

    text = yaml_dump(config)
    path = Path(CONFIG_FILE)
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


sync_config_file()


@functools.lru_cache(maxsize=None)
def _dataset(name):
    """The resolved dataset, once per workflow read: rules ask for it thousands of times and
    each resolution globs the dataset's files (the workflow has no checkpoints, so the files
    cannot change while the DAG is built)."""
    return dataset_config(config, name, require_files=False)


def scenes(ds_name):
    """Scene names of a dataset: image file stems, or the demo's names before it exists."""
    if config["datasets"][ds_name].get("predictions"):
        return []  # an audit dataset (audit.smk): nothing is tiled, trained or predicted
    ds = _dataset(ds_name)
    if ds.images and all(Path(p).exists() for p in ds.images):
        return ds.scenes
    if ds.demo:
        from spatialfair.demo import demo_scene_names

        n_test = config["datasets"][ds_name]["demo_test_scenes"]
        return demo_scene_names(ds.demo, n_test_scenes=n_test)
    if not ds.images:
        raise WorkflowError(
            f"config: datasets.{ds_name}.images matches no file. Fix: check the glob "
            "(relative to the working directory) or list the files."
        )
    return ds.scenes


@functools.lru_cache(maxsize=None)
def tile_batches(ds_name):
    """Scenes of each tiling job, by batch name (``tiling.scenes_per_job``; a batch of one
    scene is named after it)."""
    names = scenes(ds_name)
    n = config["tiling"]["scenes_per_job"]
    if n == 1:
        return {s: [s] for s in names}
    width = len(str(max(len(names) - 1, 0) // n))
    return {f"batch-{i // n:0{width}d}": names[i : i + n] for i in range(0, len(names), n)}


def image_path(ds_name, scene):
    ds = _dataset(ds_name)
    if ds.demo and not ds.images:
        return str(Path(demo_dir(ds_name)) / "images" / f"{scene}.tif")
    return str({p.stem: p for p in ds.images}[scene])


def label_path(ds_name, scene):
    ds = _dataset(ds_name)
    if ds.demo and not ds.labels:
        return str(Path(demo_dir(ds_name)) / "labels" / f"{scene}.tif")
    return str({p.stem: p for p in ds.labels}[scene])


def demo_dir(ds_name):
    """Folder the demo generator writes into: the parent of the images' folder."""
    return str(demo_folder(config, ds_name))


def regions_input(ds_name):
    regions = config["datasets"][ds_name].get("regions")
    return [regions] if regions else []


def dataset_inputs(ds_name):
    return {
        "images": [image_path(ds_name, s) for s in scenes(ds_name)],
        "labels": [label_path(ds_name, s) for s in scenes(ds_name)],
        "regions": regions_input(ds_name),
    }


# Dataset keys only the mapping of unlabelled scenes reads (the predict_map rule); left out of
# the other rules' params, so adding scenes to map reruns nothing but the maps.
MAP_KEYS = ("map_images", "map_replicate")


def section(*keys, dataset=None):
    """Config sections a rule depends on (for params-based rerun triggers)."""
    out = {k: config.get(k) for k in keys}
    if dataset is not None:
        block = config["datasets"][dataset]
        out["dataset"] = {k: v for k, v in block.items() if k not in MAP_KEYS}
    return out


def evaluation_section(*keys, dataset=None):
    """`section` with `evaluation` minus `primary`: declaring the primary comparison changes
    the comparison, not any per-run evaluation, so it must not re-run evaluations."""
    out = section("evaluation", *keys, dataset=dataset)
    out["evaluation"] = {k: v for k, v in out["evaluation"].items() if k != "primary"}
    return out


def map_section(ds):
    """The map keys of dataset ds (the rerun trigger of predict_map)."""
    return {k: config["datasets"][ds].get(k) for k in MAP_KEYS}


@functools.lru_cache(maxsize=None)
def map_rep(ds):
    """The replicate whose model maps dataset ds (None: the run's only model)."""
    from spatialfair.layout import map_replicate

    try:
        return map_replicate(SETTINGS, config["datasets"][ds].get("map_replicate"))
    except InputError as exc:
        raise WorkflowError(f"Invalid configuration (datasets.{ds}): {exc}") from None


def map_images(ds):
    """The unlabelled scenes of dataset ds to map (`map_images`), as paths."""
    if is_audit(ds) or not config["datasets"][ds].get("map_images"):
        return []
    paths = [str(p) for p in _dataset(ds).map_images]
    if not paths:
        raise WorkflowError(
            f"config: datasets.{ds}.map_images matches no file. Fix: check the glob "
            "(relative to the working directory) or list the files."
        )
    return paths


def map_outputs(ds, run):
    """The map folders of one run (none where the dataset has no `map_images`)."""
    if is_audit(ds) or not config["datasets"][ds].get("map_images"):
        return []
    map_rep(ds)  # a map_replicate that is no replicate fails here, before any job
    map_images(ds)  # as does a glob that matches no file
    return [results_path("map", ds, run), results_path("map_probabilities", ds, run)]


def replicate_files(ds, run, rep=None):
    """Model, log and prediction folders of one run (or one replicate: rep = its id)."""
    kinds = ("model", "train_log", "predictions", "probabilities")
    return [results_path(kind, ds, run, rep) for kind in kinds]


def replicate_outputs(ds, run):
    """Model, log and prediction folders of every replicate of one run."""
    return [path for rep in REPS for path in replicate_files(ds, run, rep)]


def seed_metrics_paths(ds, run):
    """Each seed's evaluation (pooled over its folds) of one replicated run."""
    return [str(LAYOUT.fairness(ds, run, seed) / "metrics.json") for seed in SEEDS]


def all_outputs():
    out = []
    for ds in DATASETS:
        if is_audit(ds):  # a map made elsewhere: audit only (workflow/rules/audit.smk)
            out += audit_outputs(ds)
            continue
        out += [
            results_path("comparison", ds, ".csv"),
            results_path("comparison", ds, ".png"),
            results_path("partitions", ds),
            results_path("tile_index", ds),
        ]
        for run in RUNS:
            out += fairness_outputs(ds, run) + map_outputs(ds, run)
            if REPLICATED:
                out += replicate_outputs(ds, run) + seed_metrics_paths(ds, run)
                continue
            out += replicate_files(ds, run)
    return out


def fairness_files(folder, ds):
    """The six fairness outputs written into one folder (a run's fairness/, an audit)."""
    return [str(p) for p in layout.fairness_files(folder, _dataset(ds).headline_metric)]


def fairness_outputs(ds, run):
    return fairness_files(LAYOUT.fairness(ds, run), ds)


def fairness_report_outputs(_ds, _metric):
    """The run-level fairness outputs of dataset _ds (maps are report items)."""
    metrics, by_region, gpkg, raster, map_png, bars_png = (
        str(p) for p in layout.fairness_files(LAYOUT.fairness(_ds, "{run}"), _metric)
    )
    return dict(
        metrics=metrics,
        by_region=by_region,
        gpkg=gpkg,
        raster=raster,
        map=report(
            map_png,
            caption="../report/map.rst",
            category=_ds,
            subcategory="{run}",
            labels={"dataset": _ds, "run": "{run}", "figure": "fairness map"},
        ),
        bars=report(
            bars_png,
            caption="../report/regions.rst",
            category=_ds,
            subcategory="{run}",
            labels={"dataset": _ds, "run": "{run}", "figure": "per-region bars"},
        ),
    )


def compare_inputs(w):
    """Every run's per-seed evaluations and, for replicates, their training logs."""
    out = []
    for run in RUNS:
        if REPLICATED:
            out += seed_metrics_paths(w.dataset, run)
            out += [results_path("train_log", w.dataset, run, r) for r in REPS]
        else:
            out += [
                str(LAYOUT.fairness(w.dataset, run) / "metrics.json"),
                results_path("train_log", w.dataset, run),
            ]
    return out


def is_audit(ds):
    """True for a dataset with `predictions` (audited, never trained)."""
    return bool(config["datasets"][ds].get("predictions"))


def audit_outputs(ds):
    return fairness_files(LAYOUT.audit(ds), ds)


def audit_inputs(ds):
    from spatialfair.config import expand_paths

    block = config["datasets"][ds]
    return {
        "predictions": [str(p) for p in expand_paths(block["predictions"], Path("."))],
        "labels": [str(p) for p in expand_paths(block["labels"], Path("."))],
        "regions": regions_input(ds),
    }


wildcard_constraints:
    dataset="|".join(map(lambda s: s.replace(".", r"\."), DATASETS)) or "NONE",
    run="|".join(map(lambda s: s.replace(".", r"\."), RUNS)) or "NONE",
    scene=r"[^/]+",
    batch=r"[^/]+",
    rep=r"s-?\d+-f\d+",
    seed=r"-?\d+",
