"""A training job against its pure compute: where the job's wall time goes, side by side.

For each dataset, in alternating rounds with the same threads:

(a) **the job**: ``spatialfair train ... --resume`` in a fresh process, as the workflow's
    ``train`` rule runs it (``OMP_NUM_THREADS`` and ``--threads`` as the workflow profile sets
    them; ``--threads`` only where the tree's CLI has it), into an empty run folder; wall
    time from process start to exit, CPU time, and the job's ``train_profile.json``;
(b) **pure compute**: in another fresh process, the same model, strategy, seed and batches
    (every epoch's batches drawn from the same loaders and held in memory as tensors on the
    device beforehand), timed over the same number of optimiser steps: forward, loss,
    backward and optimiser step only (``Session._train_step``); and, separately, the
    validation forward passes of the epochs the job validates (``training.validate_every`` and
    ``validate_after``) on in-memory batches.

Prints the job's phases (median over rounds), job wall / pure compute (the issue's ratio, target
<= 1.15) and job wall / (pure compute + pure validation) (overhead outside any compute).

Data (generated or reused under ``--work``): ``demo`` is the flood and crop demos of the
repository's ``config.yaml`` (generated with ``spatialfair demo``, then ``tile``, ``partition``
and ``split`` through the CLI, as the workflow does); ``real`` is ``bench/real-flood.yaml`` on
``../shared/data/real`` (skipped with a message where absent).

    python bench/profile_training.py                         # demo flood + crop, real flood
    python bench/profile_training.py --data demo --rounds 5
    python bench/profile_training.py --tree /tmp/old-checkout . --rounds 5   # before/after
    python bench/profile_training.py --threads 2
    python bench/profile_training.py --data demo --replicates 10 --validate-after 0.4
    python bench/profile_training.py --data demo --variant channels_last   # (b) only, see below

``--tree`` runs other checkouts' code (``PYTHONPATH``), interleaved within every round so that
drifting machine load hits them alike; data preparation always uses this checkout.
``--variant compile|channels_last`` times (b) a second time with ``torch.compile`` (compile time
included, as a job would pay it) or with the model and batches in channels-last memory format,
and reports whether they are faster and whether they give the same weights. On a GPU machine (``training.device: auto``) both sides run on the GPU with the
config's mixed precision (``training.amp``, on by default); CUDA is synchronised around the
timed loops.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
PROFILE_YAML = REPO / "workflow" / "profiles" / "default" / "config.yaml"
STRATEGY = "erm"


def workflow_threads() -> int:
    """Threads the default workflow profile gives a training job (``set-threads: train``)."""
    try:
        return int(yaml.safe_load(PROFILE_YAML.read_text())["set-threads"]["train"])
    except (OSError, KeyError, TypeError, ValueError):
        return 1


def env_for(tree: Path, threads: int) -> dict[str, str]:
    """The environment of a job: this tree's code first, the workflow's thread count."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return env


def cli(tree: Path) -> list[str]:
    """The ``spatialfair`` console script beside this interpreter (as a workflow job finds it
    on its PATH), else ``python -m spatialfair.cli``; ``PYTHONPATH`` picks ``tree``'s code."""
    script = Path(sys.executable).with_name("spatialfair")
    return [str(script)] if script.exists() else [sys.executable, "-m", "spatialfair.cli"]


def run_cli(args: list[str], log: Path) -> None:
    """Run a data-preparation command of this checkout; stop with its log on failure."""
    env = env_for(REPO, 1)
    with log.open("w") as fh:
        done = subprocess.run([*cli(REPO), *args], env=env, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"failed: spatialfair {' '.join(args)} (log: {log})")


# ---------------------------------------------------------------------------- data
def prepare(work: Path, kind: str, replicates: int = 1) -> list[tuple[str, Path, str, Path]]:
    """(label, config, dataset, tile store) of every dataset of ``kind``; prepared if absent.

    With ``replicates`` > 1 the config asks for that many seeds (the split writes each
    replicate's split column) and the data lives in its own folder."""
    out = []
    suffix, extra = "", {}
    if replicates > 1:
        suffix, extra = f"-r{replicates}", {"replicates": {"seeds": replicates, "folds": 1}}
    if kind == "demo":
        folder = work / f"demo{suffix}"
        cfg = {**yaml.safe_load((REPO / "config.yaml").read_text()), **extra}
        cfg["results"] = str(folder / "results")
        for name, block in cfg["datasets"].items():
            task = block["demo"]
            for key in ("images", "labels", "regions"):
                block[key] = block[key].replace("data/demo/", f"{folder}/data/")
            out.append((f"demo {task}", name, task))
        config = folder / "config.yaml"
        fresh = not config.exists() or yaml.safe_load(config.read_text()) != cfg
        folder.mkdir(parents=True, exist_ok=True)
        if fresh:
            config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        prepared = []
        for label, name, task in out:
            tiles = folder / "results" / name / "tiles"
            if fresh or not (tiles / "tiles.gpkg").exists():
                data = folder / "data" / task
                shutil.rmtree(data, ignore_errors=True)
                shutil.rmtree(tiles.parent, ignore_errors=True)
                print(f"[profile] preparing {label} in {folder}", flush=True)
                run_cli(
                    ["demo", task, "--out", str(data), "--seed", str(cfg["seed"])],
                    folder / f"demo-{task}.log",
                )
                common = ["--config", str(config), "--dataset", name]
                parts = tiles.parent / "partitions.gpkg"
                run_cli(["tile", *common, "--out", str(tiles)], folder / f"tile-{task}.log")
                run_cli(
                    ["partition", *common, "--tiles", str(tiles), "--out", str(parts)],
                    folder / f"partition-{task}.log",
                )
                run_cli(
                    ["split", *common, "--tiles", str(tiles), "--partitions", str(parts)],
                    folder / f"split-{task}.log",
                )
            prepared.append((label, config, name, tiles))
        return prepared
    # real flood: bench/real-flood.yaml with its data path made absolute
    if not REAL.is_dir():
        print(f"[profile] real flood skipped: {REAL} is absent (see its README)")
        return []
    folder = work / f"real-flood{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {**yaml.safe_load((REPO / "bench" / "real-flood.yaml").read_text()), **extra}
    cfg["results"] = str(folder / "results")
    (name, block), *_ = cfg["datasets"].items()
    for key in ("images", "labels", "regions"):
        block[key] = block[key].replace("../shared/data/real", str(REAL))
    config = folder / "config.yaml"
    fresh = not config.exists() or yaml.safe_load(config.read_text()) != cfg
    tiles = folder / "results" / name / "tiles"
    if fresh or not (tiles / "tiles.gpkg").exists():
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        shutil.rmtree(tiles.parent, ignore_errors=True)
        print(f"[profile] preparing real flood in {folder}", flush=True)
        common = ["--config", str(config), "--dataset", name]
        parts = tiles.parent / "partitions.gpkg"
        run_cli(["tile", *common, "--out", str(tiles)], folder / "tile.log")
        run_cli(
            ["partition", *common, "--tiles", str(tiles), "--out", str(parts)],
            folder / "partition.log",
        )
        run_cli(
            ["split", *common, "--tiles", str(tiles), "--partitions", str(parts)],
            folder / "split.log",
        )
    return [("real flood", config, name, tiles)]


# ---------------------------------------------------------------------------- (a) the job
def run_job(
    tree: Path, config: Path, dataset: str, tiles: Path, out: Path, threads: int, replicates: int
) -> dict:
    """One ``spatialfair train`` job as the workflow runs it; wall, CPU and its profile (with
    replicates: one job training all of them, ``--replicates all``, profiles summed)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [*cli(tree), "train", "--config", str(config), "--dataset", dataset]
    cmd += ["--strategy", STRATEGY, "--tiles", str(tiles), "--out", str(out), "--resume"]
    if replicates > 1:
        cmd += ["--replicates", "all"]
    if "--threads" in (tree / "spatialfair" / "commands" / "train.py").read_text():
        cmd += ["--threads", str(threads)]
    log = out.parent / f"{out.name}.log"
    with log.open("w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env_for(tree, threads), stdout=fh, stderr=fh)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"training job failed ({log})")
    found = sorted(out.glob("reps/*/train_profile.json")) or [out / "train_profile.json"]
    profiles = [json.loads(p.read_text()) for p in found if p.exists()]
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "profile": summed_profile(profiles) if profiles else None,
        "command": " ".join(cmd),
    }


def summed_profile(profiles: list[dict]) -> dict:
    """One profile of a job that trained several replicates: phases and job time summed."""
    total = dict(profiles[0], phases=dict(profiles[0]["phases"]))
    for p in profiles[1:]:
        for phase, seconds in p["phases"].items():
            total["phases"][phase] = total["phases"].get(phase, 0.0) + seconds
        total["job_seconds"] += p["job_seconds"]
    return total


# ---------------------------------------------------------------------------- (b) pure compute
def pure_compute(args: argparse.Namespace) -> None:
    """Child process: time the job's optimiser steps on in-memory batches; print JSON.

    Where the tree's job tunes its process (spatialfair.process: malloc, garbage collector),
    this process does the same, so that (a) and (b) differ by what lies around the compute.
    """
    from contextlib import nullcontext

    try:
        from spatialfair.process import imports_without_gc, tune_allocator
    except ImportError:  # a version without them
        tuned, imports = False, nullcontext()
    else:
        tuned, imports = tune_allocator(), imports_without_gc(freeze=True)
    with imports:
        import torch

        from spatialfair.config import dataset_config, load_config, strategy_runs
    torch.set_num_threads(args.threads)
    from spatialfair.settings import Settings

    try:
        from spatialfair.training.plan import Plan
        from spatialfair.training.session import Session
    except ImportError:  # a tree from before the training package
        from spatialfair.train import _Plan as Plan
        from spatialfair.train import _Session as Session
    from spatialfair.training.selection import validation_pass

    config = load_config(args.config)
    ds = dataset_config(config, args.dataset, require_files=False)
    run = {r.name: r for r in strategy_runs(config)}[args.strategy]
    tiles = Path(args.tiles)
    parts = tiles.parent / "partitions.gpkg"
    settings = Settings.from_config(config)
    if args.replicates > 1:  # every replicate of the config: its seed and split column
        from spatialfair.layout import replicates

        draws = [{"seed": r.seed, "split_column": r.column} for r in replicates(settings)]
    else:
        draws = [{}]
    results = []
    for draw in draws:
        plan = Plan(settings, ds, run, tiles, parts if parts.exists() else None, **draw)
        results.append(pure_compute_of(plan, args, tuned, Session, validation_pass, torch))
    total = dict(results[0])
    for key in ("compute", "compute_cpu", "validation", "steps", "epochs"):
        total[key] = sum(r[key] for r in results)
    if "variant_compute" in total:
        total["variant_compute"] = sum(r["variant_compute"] for r in results)
    total["replicates"] = len(results)
    print(json.dumps(total))


def pure_compute_of(plan, args, tuned, Session, validation_pass, torch) -> dict:  # noqa: N803
    """Time one training's optimiser steps and validation passes on in-memory batches."""
    from spatialfair.devices import resolve_device
    from spatialfair.distributed import DistContext

    ds = plan.ds
    device = resolve_device(plan.tcfg.device)

    def session(variant: str | None = None) -> Session:
        with tempfile.TemporaryDirectory() as tmp:
            s = Session(plan, Path(tmp), device, DistContext())
        if len(s.phases) != 1:
            sys.exit(f"pure compute: strategy {args.strategy} has several phases")
        if variant == "channels_last":
            s.model.to(memory_format=torch.channels_last)
        s.enter_phase(0, fresh=True)
        if variant == "compile":
            s.optim.ddp_model = torch.compile(s.model)
        return s

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def on_device(batch: dict, variant: str | None = None) -> dict:
        out = {k: v.to(device) for k, v in batch.items()}
        if variant == "channels_last":
            out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
        return out

    def timed(s: Session, steps: list[dict]) -> tuple[float, float]:
        s.optim.ddp_model.train()
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for b in steps:
            s._train_step(b)
        sync()
        return time.perf_counter() - t0, time.process_time() - c0

    base = session()
    batches = []
    for epoch in range(base.total):
        base.train_loader.sampler.set_epoch(epoch)
        base.data.train_ds.set_epoch(epoch)
        batches += [on_device(b) for b in base.train_loader]
    val = [on_device(b) for b in base.data.val_loader]
    compute, compute_cpu = timed(base, batches)
    t0 = time.perf_counter()
    for _ in range(validation_passes(plan, base.total)):
        validation_pass(base.model, val, device, plan.num_regions, ds.num_classes, base.autocast)
    sync()
    result = {
        "compute": compute,
        "compute_cpu": compute_cpu,
        "validation": time.perf_counter() - t0,
        "steps": len(batches),
        "val_batches": len(val),
        "epochs": base.total,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "amp": base.amp_dtype,
        "allocator_tuned": tuned,
    }
    if args.variant:
        other = session(args.variant)
        steps = [on_device(b, args.variant) for b in batches]
        result["variant"] = args.variant
        result["variant_compute"] = timed(other, steps)[0]
        diffs = [
            (a.float() - b.float()).abs().max().item()
            for a, b in zip(base.model.state_dict().values(), other.model.state_dict().values())
        ]
        result["variant_max_weight_diff"] = max(diffs)
    return result


def validation_passes(plan, epochs: int) -> int:
    """Validation passes a one-phase run of ``epochs`` makes (its validation schedule)."""
    try:
        from spatialfair.training.selection import validated_epochs
    except ImportError:  # a tree from before training.validate_every: every epoch
        return epochs
    tcfg = plan.tcfg
    return len(validated_epochs(epochs, int(tcfg.validate_every), float(tcfg.validate_after)))


def with_schedule(config: Path, every: int | None, after: float | None) -> Path:
    """``config`` itself, or a copy beside it with ``training.validate_every/after`` set."""
    if every is None and after is None:
        return config
    cfg = yaml.safe_load(config.read_text())
    cfg["training"] = {
        **cfg.get("training", {}),
        **({"validate_every": every} if every is not None else {}),
        **({"validate_after": after} if after is not None else {}),
    }
    out = config.with_name(f"config-every{every or 1}-after{after or 0}.yaml")
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def run_pure(
    tree: Path,
    config: Path,
    dataset: str,
    tiles: Path,
    threads: int,
    variant: str | None,
    replicates: int,
) -> dict:
    """(b) in a fresh process with the job's environment (every replicate, times summed)."""
    cmd = [sys.executable, __file__, "--pure-compute", "--config", str(config)]
    cmd += ["--dataset", dataset, "--tiles", str(tiles), "--threads", str(threads)]
    cmd += ["--replicates", str(replicates)]
    cmd += ["--strategy", STRATEGY] + (["--variant", variant] if variant else [])
    done = subprocess.run(cmd, env=env_for(tree, threads), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"pure compute failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- report
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(label: str, jobs: list[dict], pures: list[dict]) -> str:
    """The Markdown tables of one dataset."""
    wall = median([j["wall"] for j in jobs])
    cpu = median([j["cpu"] for j in jobs])
    pure = median([p["compute"] for p in pures])
    val = median([p["validation"] for p in pures])
    ratios = [j["wall"] / p["compute"] for j, p in zip(jobs, pures)]
    p0 = pures[0]
    lines = [
        f"#### {label}: {p0.get('replicates', 1)} training(s) in one job, {p0['steps']} steps "
        f"({p0['epochs']} epochs) in all, {p0['val_batches']} validation batches per epoch, "
        f"{p0['threads']} thread(s), {p0['device']}"
        + (f", AMP {p0['amp']}" if p0["amp"] != "float32" else "")
        + (", malloc tuned" if p0.get("allocator_tuned") else ""),
        "",
        "| measure | median (s) | rounds (s) |",
        "|---|---:|---|",
        f"| job wall (process start to exit) | {wall:.2f} | "
        + ", ".join(f"{j['wall']:.2f}" for j in jobs)
        + " |",
        f"| job CPU (user + sys) | {cpu:.2f} | "
        + ", ".join(f"{j['cpu']:.2f}" for j in jobs)
        + " |",
        f"| pure compute (forward + backward + optimiser) | {pure:.2f} | "
        + ", ".join(f"{p['compute']:.2f}" for p in pures)
        + " |",
        f"| pure validation forward | {val:.2f} | "
        + ", ".join(f"{p['validation']:.2f}" for p in pures)
        + " |",
        f"| **job wall / pure compute** | **{median(ratios):.2f}** | "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + " |",
        f"| job wall / (pure compute + pure validation) | {wall / (pure + val):.2f} | |",
    ]
    if "variant" in p0:
        var = [p["variant_compute"] for p in pures]
        lines += [
            f"| pure compute with {p0['variant']} | {median(var):.2f} | "
            + ", ".join(f"{v:.2f}" for v in var)
            + " |",
            f"| {p0['variant']} / plain (weights after the steps: max difference "
            f"{max(p['variant_max_weight_diff'] for p in pures):.1e}) | "
            f"{median([v / p['compute'] for v, p in zip(var, pures)]):.2f} | |",
        ]
    lines += [""]
    profiles = [j["profile"] for j in jobs if j["profile"]]
    if profiles:
        phases = list(profiles[0]["phases"])
        lines += ["| phase (train_profile.json) | median (s) | share of job |", "|---|---:|---:|"]
        job_med = median([p["job_seconds"] for p in profiles])
        for ph in phases:
            v = median([p["phases"][ph] for p in profiles])
            lines.append(f"| {ph} | {v:.3f} | {100 * v / job_med:.1f} % |")
        lines.append(f"| **job (profile: startup + train())** | **{job_med:.2f}** | 100 % |")
        lines.append(f"| process exit and the rest (job wall - profile) | {wall - job_med:.2f} | |")
        lines.append("")
    else:
        lines += ["(this tree writes no train_profile.json)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["demo", "real", "all"], default="all")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="default: the workflow profile's")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sf-profile")
    p.add_argument(
        "--tree", type=Path, nargs="+", default=[REPO], help="checkout(s) whose code runs"
    )
    p.add_argument(
        "--variant",
        choices=["compile", "channels_last"],
        default=None,
        help="also time pure compute with this variant",
    )
    p.add_argument(
        "--replicates",
        type=int,
        default=1,
        metavar="N",
        help="N > 1: the job trains N replicates (seeds) in one process (replicates.one_job, "
        "spatialfair train --replicates all); pure compute is summed over the same N trainings",
    )
    p.add_argument(
        "--validate-every",
        type=int,
        default=None,
        metavar="N",
        help="training.validate_every of the job and of (b) (default: the config's)",
    )
    p.add_argument(
        "--validate-after",
        type=float,
        default=None,
        metavar="F",
        help="training.validate_after of the job and of (b) (default: the config's)",
    )
    p.add_argument("--only", default=None, help="only datasets whose label contains this")
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    # the child of (b)
    p.add_argument("--pure-compute", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--tiles", help=argparse.SUPPRESS)
    p.add_argument("--strategy", default=STRATEGY, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pure_compute:
        pure_compute(args)
        return
    threads = args.threads or workflow_threads()
    kinds = ["demo", "real"] if args.data == "all" else [args.data]
    sets = [
        (label, with_schedule(config, args.validate_every, args.validate_after), name, tiles)
        for kind in kinds
        for label, config, name, tiles in prepare(args.work, kind, args.replicates)
    ]
    if args.only:
        sets = [s for s in sets if args.only in s[0]]
    trees = [t.resolve() for t in args.tree]
    print(
        f"[profile] tree(s) {', '.join(map(str, trees))}; {threads} thread(s), {args.rounds} "
        f"round(s), strategy {STRATEGY}, {args.replicates} replicate(s) per job, validation "
        f"every {args.validate_every or 'config'} after {args.validate_after or 'config'}; {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC,"
        f" load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    raw: dict = {}
    text = []
    for label, config, dataset, tiles in sets:
        results = {t: ([], []) for t in trees}
        for r in range(args.rounds):
            for k, tree in enumerate(trees):
                jobs, pures = results[tree]
                out = args.work / "runs" / f"{dataset}-t{k}-r{r}"
                order = ("job", "pure") if (r + k) % 2 == 0 else ("pure", "job")
                for side in order:
                    if side == "job":
                        jobs.append(
                            run_job(tree, config, dataset, tiles, out, threads, args.replicates)
                        )
                    else:
                        pures.append(
                            run_pure(
                                tree, config, dataset, tiles, threads, args.variant, args.replicates
                            )
                        )
                print(
                    f"[profile] {label} round {r + 1}, {tree.name}: job {jobs[-1]['wall']:.2f} s,"
                    f" pure compute {pures[-1]['compute']:.2f} s, "
                    f"ratio {jobs[-1]['wall'] / pures[-1]['compute']:.2f}",
                    flush=True,
                )
        for tree, (jobs, pures) in results.items():
            print(f"[profile] job command: {jobs[0]['command']}")
            raw[f"{label} | {tree}"] = {"jobs": jobs, "pure": pures}
            name = f"{label}, {tree}" if len(trees) > 1 else label
            text.append(report(name, jobs, pures))
    print(f"load average at the end {os.getloadavg()[0]:.1f}\n")
    print("\n".join(text))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
