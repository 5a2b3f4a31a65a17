"""Configuration: load, validate (JSON Schema with defaults), task presets, dataset resolution.

The same schema (``spatialfair/schemas/config.schema.yaml``) validates the Snakemake config and
configs passed to the ``spatialfair`` command, so a config means the same thing everywhere.
Errors name the offending key and say how to fix it.
"""

from __future__ import annotations

import copy
import functools
import glob
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .constants import DEMO_TEST_INFIX, IGNORE_INDEX
from .errors import InputError

SCHEMA_PATH = Path(str(resources.files("spatialfair") / "schemas" / "config.schema.yaml"))

#: Defaults per task. ``headline_metric`` drives model selection and the comparison.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    "flood": {
        "classes": ["land", "water"],
        "colors": ["#c8b48c", "#1f78b4"],
        "headline_metric": "iou_water",
        "positive_class": 1,
    },
    "crop": {
        "classes": ["background", "maize", "wheat", "soy", "rice"],
        "colors": ["#d9d9d9", "#f1c40f", "#e67e22", "#27ae60", "#8e44ad"],
        "headline_metric": "accuracy",
        "positive_class": None,
    },
}


@functools.cache
def _parsed_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def load_schema() -> dict:
    """The configuration JSON Schema.

    Returns:
        A fresh copy of the schema as a dict (parsed once per process).
    """
    return copy.deepcopy(_parsed_schema())


def _fill_defaults(instance: Any, schema: dict) -> None:
    """Fill schema defaults into ``instance`` in place (objects only, recursively)."""
    if not isinstance(instance, dict) or schema.get("type") not in ("object", None):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)


def _describe_error(err: jsonschema.ValidationError, source: str) -> InputError:
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        fix = f"remove or rename it; allowed keys here: {', '.join(allowed)}"
    elif err.validator == "type":
        fix = f"give a value of type {err.validator_value}"
    elif err.validator == "enum":
        fix = f"use one of {err.validator_value}"
    elif err.validator == "required":
        fix = "add the missing key"
    elif err.validator == "oneOf":
        fix = "see the schema's description of this key in spatialfair/schemas/config.schema.yaml"
    else:
        fix = f"see spatialfair/schemas/config.schema.yaml ({err.validator}: {err.validator_value})"
    return InputError(f"{source}: key '{where}'", err.message, fix)


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` against the schema and return a copy with defaults filled in.

    Args:
        config: The config as read (None counts as empty).
        source: What to name in an error message (e.g. the file).

    Returns:
        A validated copy with every default filled in.

    Raises:
        InputError: The config breaks the schema; names the first offending key and the fix.
    """
    schema = load_schema()
    config = copy.deepcopy(config) if config is not None else {}
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise _describe_error(best, source)
    _fill_defaults(config, schema)
    _check_fixed_test_sets(config, source)
    return config


def _check_fixed_test_sets(config: dict, source: str) -> None:
    """A fixed test set (``test_scenes``) and spatial K-fold (every block test once) conflict."""
    folds = (config.get("replicates") or {}).get("folds", 1)
    if folds <= 1:
        return
    for name, block in (config.get("datasets") or {}).items():
        if _test_scene_patterns(block):
            raise InputError(
                f"{source}: datasets.{name}.test_scenes",
                f"a fixed test set cannot be combined with replicates.folds: {folds} (spatial "
                "K-fold puts every block in test once)",
                "set replicates.folds: 1 (seeds still redraw the train/validation split), or "
                "remove test_scenes/demo_test_scenes",
            )


def load_config(path: str | Path) -> dict:
    """Read a YAML config file, validate it and fill defaults.

    Args:
        path: The YAML file.

    Returns:
        The validated config with defaults filled in.

    Raises:
        InputError: The file is missing, is not valid YAML or breaks the schema.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "config file not found", "pass the path of an existing YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML ({exc})", "fix the YAML syntax") from exc
    return validate_config(raw or {}, source=str(path))


@dataclass
class StrategyRun:
    """One training run: a strategy with its strength; ``name`` is its results folder."""

    name: str
    strategy: str
    options: dict = field(default_factory=dict)


def strategy_runs(config: dict) -> list[StrategyRun]:
    """Expand the ``strategies`` entry (list or mapping, with sweeps) into runs.

    Names are checked by the schema, whose enums follow ``spatialfair.fairness.STRATEGIES``
    (the one registry; not imported here, so reading a config does not load torch).

    Args:
        config: A validated config (without ``strategies``: the schema's default list).

    Returns:
        One run per strategy, then one per sweep value, named ``<strategy>-<value>``.
    """
    spec = config.get("strategies") or load_schema()["properties"]["strategies"]["default"]
    if isinstance(spec, list):
        return [StrategyRun(s, s, {}) for s in spec]
    runs: list[StrategyRun] = []
    for strategy, opts in spec.items():
        opts = dict(opts or {})
        sweep = opts.pop("sweep", None) or []
        runs.append(StrategyRun(strategy, strategy, dict(opts)))
        for value in sweep:
            runs.append(StrategyRun(f"{strategy}-{value:g}", strategy, {**opts, "strength": value}))
    return runs


@dataclass
class DatasetConfig:
    """A resolved dataset: file lists matched by name, task preset applied.

    ``predictions`` holds an audit dataset's prediction files (globs expanded; empty for a
    dataset that is trained).
    """

    name: str
    task: str
    images: list[Path]
    labels: list[Path]
    regions: Path | None
    regions_layer: str | None
    region_column: str
    classes: list[str]
    colors: list[str]
    headline_metric: str
    positive_class: int | None
    bands: list[str] | None = None
    nodata: float | None = None
    ignore_index: int = IGNORE_INDEX
    reproject_labels: bool = False
    demo: str | None = None
    test_scenes: list[str] = field(default_factory=list)
    map_images: list[Path] = field(default_factory=list)
    map_replicate: str | None = None
    predictions: list[Path] = field(default_factory=list)

    @property
    def scenes(self) -> list[str]:
        """Scene names (image file stems), in order."""
        return [p.stem for p in self.images]

    @property
    def map_scenes(self) -> list[str]:
        """Names (file stems) of the unlabelled scenes to map, in order."""
        return [p.stem for p in self.map_images]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def demo_folder(config: dict, name: str) -> Path:
    """Folder a demo dataset is generated into: the parent of its images' folder.

    Args:
        config: A validated config.
        name: A dataset with ``demo`` set.

    Returns:
        The folder that receives ``images/``, ``labels/`` and ``regions.gpkg``.
    """
    spec = config["datasets"][name]["images"]
    first = spec if isinstance(spec, str) else spec[0]
    return Path(first).parent.parent


@functools.cache
def dataset_default(key: str) -> Any:
    """The schema's default of a dataset block's ``key`` (for configs not yet validated).

    Args:
        key: A key of a ``datasets.<name>`` block, e.g. ``demo_size``.

    Returns:
        Its default in spatialfair/schemas/config.schema.yaml (cached).

    Raises:
        KeyError: If the key is not in the schema or has no default.
    """
    return load_schema()["properties"]["datasets"]["additionalProperties"]["properties"][key][
        "default"
    ]


def expand_paths(spec: str | list[str], base: Path) -> list[Path]:
    """The files of a path or glob (or a list of them), sorted per glob; relative to ``base``.

    A plain path is kept whether or not it exists (its checks come later, with the fix).
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[Path] = []
    for item in items:
        pattern = item if Path(item).is_absolute() else str(base / item)
        if any(ch in item for ch in "*?["):
            out.extend(Path(p) for p in sorted(glob.glob(pattern)))
        else:
            out.append(Path(pattern))
    return out


def _pair_labels(name: str, block: dict, images: list[Path], labels: list[Path]) -> list[Path]:
    """Match each image to its label by file stem, raising InputError on missing files."""
    if not images:
        raise InputError(
            f"config: datasets.{name}.images",
            f"'{block['images']}' matches no file",
            "check the glob (relative to the working directory) or list the files",
        )
    by_stem = {p.stem: p for p in labels}
    missing = [p.name for p in images if p.stem not in by_stem]
    if missing:
        raise InputError(
            f"config: datasets.{name}.labels",
            f"no label file with the same name for image(s) {missing[:5]}",
            "name each label file like its image (same file stem) in the labels folder",
        )
    labels = [by_stem[p.stem] for p in images]
    for p in images:
        if not p.exists():
            raise InputError(p, "image file not found", "fix the path in the config")
    return labels


def dataset_config(
    config: dict, name: str, base: str | Path = ".", require_files: bool = True
) -> DatasetConfig:
    """Resolve dataset ``name`` of a validated config.

    Args:
        config: A validated config.
        name: The dataset's name.
        base: Directory that globs and relative paths are expanded against.
        require_files: Make an empty image glob, an image without a label (matched by file
            stem) or a missing image file an error.

    Returns:
        The dataset with its files resolved and the task preset applied.

    Raises:
        InputError: Unknown dataset, too few colours, or (``require_files``) missing files.
    """
    base = Path(base)
    if name not in config["datasets"]:
        raise InputError(
            f"config: datasets.{name}",
            "no such dataset",
            f"use one of {sorted(config['datasets'])}",
        )
    block = config["datasets"][name]
    preset = TASK_PRESETS[block["task"]]
    classes = block.get("classes") or preset["classes"]
    colors = block.get("colors") or preset["colors"][: len(classes)]
    if len(colors) < len(classes):
        raise InputError(
            f"config: datasets.{name}.colors",
            f"{len(colors)} colours for {len(classes)} classes",
            "give one '#rrggbb' colour per class",
        )
    images = expand_paths(block.get("images") or [], base)  # none for an audit dataset
    labels = expand_paths(block["labels"], base)
    if require_files:
        labels = _pair_labels(name, block, images, labels)
    regions = block.get("regions")
    regions_path = None
    if regions:
        regions_path = Path(regions) if Path(regions).is_absolute() else base / regions
    positive = (
        preset["positive_class"]
        if classes == preset["classes"]
        else (1 if block["task"] == "flood" else None)
    )
    return DatasetConfig(
        name=name,
        task=block["task"],
        images=images,
        labels=labels,
        regions=regions_path,
        regions_layer=block.get("regions_layer"),
        region_column=block.get("region_column", dataset_default("region_column")),
        classes=list(classes),
        colors=list(colors),
        headline_metric=block.get("headline_metric") or preset["headline_metric"],
        positive_class=positive,
        bands=block.get("bands"),
        nodata=block.get("nodata"),
        ignore_index=block.get("ignore_index", dataset_default("ignore_index")),
        reproject_labels=block.get("reproject_labels", dataset_default("reproject_labels")),
        demo=block.get("demo"),
        test_scenes=_test_scene_patterns(block),
        map_images=expand_paths(block.get("map_images") or [], base),
        map_replicate=block.get("map_replicate"),
        predictions=expand_paths(block.get("predictions") or [], base),
    )


def _test_scene_patterns(block: dict) -> list[str]:
    """The dataset's fixed test scenes (names or fnmatch patterns); the demo's when generated."""
    spec = block.get("test_scenes")
    if spec:
        return [spec] if isinstance(spec, str) else list(spec)
    n_test = block.get("demo_test_scenes", dataset_default("demo_test_scenes"))
    if block.get("demo") and n_test:
        return [f"{block['demo']}{DEMO_TEST_INFIX}*"]
    return []
