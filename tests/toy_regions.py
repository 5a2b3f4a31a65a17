"""A toy per-region segmentation problem for behavioural tests of the strategies.

Every tile lies in one region; its pixels have two features and a binary label
``x0 + shift_r > 0``. Optional label noise makes a region persistently harder (its loss cannot
fall below the noise's entropy). The model is a 1x1 convolution (per-pixel logistic
regression), so a 48-step run takes milliseconds and its outcome is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def make_batches(
    steps: int = 48,
    *,
    regions: int = 4,
    tiles: int = 8,
    side: int = 8,
    noise: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    present: Sequence[Sequence[int]] | None = None,
    shifts: Sequence[float] | None = None,
    labelled: Sequence[float] | None = None,
    seed: int = 0,
) -> list[dict[str, torch.Tensor]]:
    """``steps`` batches of ``tiles`` tiles (``side`` x ``side`` pixels), seeded.

    ``noise[r]`` is the share of flipped labels in region r; ``present[s]`` lists the regions
    batch s draws its tiles from (default: all); ``shifts[r]`` moves region r's boundary
    (default: all 0, so regions differ only by their noise); ``labelled[r]`` is the share of
    region r's pixels that are labelled (default: all).
    """
    gen = torch.Generator().manual_seed(seed)
    shifts = torch.zeros(regions) if shifts is None else torch.as_tensor(shifts, dtype=torch.float)
    out = []
    for s in range(steps):
        pool = torch.as_tensor(list(present[s]) if present else range(regions))
        reg = pool[torch.randint(len(pool), (tiles,), generator=gen)]
        x = torch.randn(tiles, 2, side, side, generator=gen)
        y = (x[:, 0] + shifts[reg].view(-1, 1, 1) > 0).long()
        flip = torch.rand(tiles, side, side, generator=gen) < torch.as_tensor(noise)[reg].view(
            -1, 1, 1
        )
        y = torch.where(flip, 1 - y, y)
        share = torch.ones(regions) if labelled is None else torch.as_tensor(labelled)
        valid = torch.rand(tiles, side, side, generator=gen) < share[reg].view(-1, 1, 1)
        y = torch.where(valid, y, torch.full_like(y, 255))
        out.append(
            {
                "x": x,
                "y": y,
                "valid": valid,
                "regions": reg.view(-1, 1, 1).expand(-1, side, side).clone(),
                "tile_regions": reg.view(-1, 1).clone(),
                "tile_ids": torch.arange(s * tiles, (s + 1) * tiles),
            }
        )
    return out


def train_toy(strategy, batches, *, lr: float = 0.5, seed: int = 0, record=None):
    """Train a 1x1-conv classifier with ``strategy.loss`` over ``batches`` (one step each).

    ``record(strategy)`` is called after every step; its results are returned with the model.
    """
    torch.manual_seed(seed)
    model = torch.nn.Conv2d(2, 2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    trace = []
    for b in batches:
        logits = model(b["x"])
        pixel_loss = F.cross_entropy(logits, b["y"], ignore_index=255, reduction="none")
        extra = {"tile_ids": b["tile_ids"]} if strategy.needs_tile_ids else {}
        loss = strategy.loss(
            pixel_loss,
            b["valid"],
            b["regions"],
            logits=logits,
            target=b["y"],
            tile_regions=b["tile_regions"],
            **extra,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if record is not None:
            trace.append(record(strategy))
    return model, trace


def region_losses(model, batches, regions: int = 4) -> torch.Tensor:
    """Mean cross-entropy per region over ``batches`` (no gradient)."""
    sums, counts = torch.zeros(regions), torch.zeros(regions)
    with torch.no_grad():
        for b in batches:
            loss = F.cross_entropy(model(b["x"]), b["y"], ignore_index=255, reduction="none")
            valid = b["valid"].flatten().float()
            sums.index_add_(0, b["regions"].flatten(), loss.flatten() * valid)
            counts.index_add_(0, b["regions"].flatten(), valid)
    return sums / counts.clamp(min=1)
