"""Two CPU processes (gloo): all-reduced region statistics and DDP gradients equal one process.

Each rank holds half of a batch. The all-reduced per-region sums must equal the sums over the
whole batch in one process, and for every strategy the gradient that DDP averages over ranks
must equal the single-process gradient of the same global objective (the strategies weight
regions from global statistics and scale the local loss accordingly).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from spatialfair.distributed import Reducer
from spatialfair.fairness import make_strategy, region_loss_sums

K, C = 3, 2
STRATS = ["erm", "reweight", "variance", "groupdro", "cvar", "spad"]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 6, 6, generator=g)
    target = torch.randint(0, C, (4, 6, 6), generator=g)
    target[torch.rand(4, 6, 6, generator=g) < 0.15] = 255
    regions = torch.randint(-1, K, (4, 6, 6), generator=g)
    regions[0] = 0  # region 0 heavy on rank 0: batch halves differ in composition
    tile_regions = torch.tensor([[0, 1], [1, 0], [2, 1], [1, 1]])
    return x, target, regions, tile_regions


def _model():
    torch.manual_seed(1)
    return torch.nn.Conv2d(3, C, 1)


def _strategy(name):
    opts = {
        "region_counts": torch.tensor([50.0, 30.0, 20.0]),
        "partition_sizes": [3, 2],
        "num_classes": C,
    }
    if name in ("variance", "spad"):
        opts["warmup_steps"] = 0
    if name == "spad":
        opts["switch_every"] = 1
    return make_strategy(name, K, 0.5 if name == "groupdro" else None, **opts)


def _step(model, strategy, x, target, regions, tile_regions, reduce):
    """Two steps (so stateful strategies use their updated state); grads of the second."""
    grads = None
    for _ in range(2):
        model.zero_grad()
        logits = model(x)
        pl = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
        loss = strategy.loss(
            pl,
            target != 255,
            regions,
            logits=logits,
            target=target,
            tile_regions=tile_regions,
            reduce=reduce,
        )
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
    return loss.detach(), grads


def _to_numpy(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().numpy().copy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def _worker(rank, world, init, queue):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        x, target, regions, tile_regions = _data()
        half = slice(rank * 2, rank * 2 + 2)
        reduce = Reducer(world)
        logits = _model()(x[half])
        pl = F.cross_entropy(logits, target[half], ignore_index=255, reduction="none")
        sums, counts = region_loss_sums(pl, regions[half], target[half] != 255, K)
        out = {"sums": reduce(sums).detach(), "counts": reduce(counts)}
        for name in STRATS:
            model = torch.nn.parallel.DistributedDataParallel(_model())
            strategy = _strategy(name)
            loss, grads = _step(
                model, strategy, x[half], target[half], regions[half], tile_regions[half], reduce
            )
            out[name] = (loss, grads, strategy.region_weights())
        # numpy, not tensors: tensors travel through shared memory that dies with this process
        queue.put((rank, _to_numpy(out)))
    finally:
        dist.destroy_process_group()


def _to_tensor(obj):
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, dict):
        return {k: _to_tensor(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_tensor(v) for v in obj)
    return obj


def test_two_process_gloo_matches_single_process(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_worker, args=(r, 2, init, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    results = {r: _to_tensor(v) for r, v in results.items()}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    x, target, regions, tile_regions = _data()
    logits = _model()(x)
    pl = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    sums, counts = region_loss_sums(pl, regions, target != 255, K)
    for rank in (0, 1):
        torch.testing.assert_close(results[rank]["sums"], sums.detach())
        torch.testing.assert_close(results[rank]["counts"], counts)
    assert counts.sum() > 0

    for name in STRATS:
        loss, grads = _step(_model(), _strategy(name), x, target, regions, tile_regions, None)
        for rank in (0, 1):
            r_loss, r_grads, r_weights = results[rank][name]
            torch.testing.assert_close(r_loss, loss, msg=f"{name}: loss value")
            for g, rg in zip(grads, r_grads):
                torch.testing.assert_close(rg, g, msg=f"{name}: DDP gradient")
        w0, w1 = results[0][name][2], results[1][name][2]
        if w0 is not None:
            torch.testing.assert_close(w0, w1, msg=f"{name}: ranks disagree on region weights")


@pytest.mark.slow
def test_torchrun_training_two_processes(tmp_path):
    """`torchrun --nproc-per-node 2 -m spatialfair.cli train` end to end on CPU (gloo).

    The validation score logged for the kept epoch (confusion matrices summed over ranks, each
    tile once) must equal a single-process evaluation of the saved model.
    """
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd
    import yaml

    sys.path.insert(0, str(Path(__file__).parent))
    from test_data import make_store

    from spatialfair.config import validate_config
    from spatialfair.data import TileDataset, make_loader
    from spatialfair.models import load_bundle
    from spatialfair.train import summarize_validation, validation_pass

    store = make_store(tmp_path / "tiles", tiles_per_scene=9)  # odd tile counts per rank
    config = validate_config(
        {
            "datasets": {
                "d": {
                    "task": "flood",
                    "images": "x/*.tif",
                    "labels": "x/*.tif",
                    "classes": ["c0", "c1"],
                    "headline_metric": "iou_c1",
                }
            },
            "strategies": ["groupdro"],
            "model": {"width": 4, "depth": 2},
            "training": {"epochs": 2, "batch_size": 2},
            "evaluation": {"min_region_pixels": 10},
        }
    )
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "groupdro"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "spatialfair.cli",
            "train",
            "--config",
            str(cfg),
            "--dataset",
            "d",
            "--strategy",
            "groupdro",
            "--tiles",
            str(store),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1/2 joined" in proc.stderr or "rank 0/2 joined" in proc.stderr
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["epoch"]) == [1, 2]
    model, bundle = load_bundle(out / "model.pt")
    val = TileDataset(store, "val", norm=(bundle["norm_mean"], bundle["norm_std"]))
    conf = validation_pass(model, make_loader(val, 4, train=False), torch.device("cpu"), 3, 2)
    n_val_px = int((np.stack([val[i]["valid"].numpy() for i in range(len(val))])).sum())
    assert conf.sum() == n_val_px
    summary = summarize_validation(conf, ["c0", "c1"], "iou_c1", ["0", "1", "2"], 10)
    kept = log.loc[log["epoch"] == bundle["epoch"]].iloc[0]
    assert summary["score"] == pytest.approx(kept["score"], rel=1e-5)
    q = bundle["strategy_state"]["q"]
    assert torch.isclose(q.sum(), torch.tensor(1.0))
