"""Two CPU processes (gloo): all-reduced region statistics and DDP gradients equal one process.

Each rank holds half of a batch. The all-reduced per-region sums must equal the sums over the
whole batch in one process, and for every strategy the gradient that DDP averages over ranks
must equal the single-process gradient of the same global objective (the strategies weight
regions from global statistics and scale the local loss accordingly).
"""

from __future__ import annotations

import numpy as np
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
    opts = {"region_counts": torch.tensor([50.0, 30.0, 20.0]), "partition_sizes": [3, 2],
            "num_classes": C}
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
        loss = strategy.loss(pl, target != 255, regions, logits=logits, target=target,
                             tile_regions=tile_regions, reduce=reduce)
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
            loss, grads = _step(model, strategy, x[half], target[half], regions[half],
                                tile_regions[half], reduce)
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
