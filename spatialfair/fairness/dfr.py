"""DFR (``lastlayer``): ERM, then the classifier head refit on held-out, region-balanced pixels.

Kirichenko et al. (2023) retrain the last layer of an ERM model on held-out data with balanced
groups, as a regularised logistic regression fit to convergence. Here the held-out data is half
of the validation tiles (split per region), the other half chooses the L2 strength.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models import unwrap
from .base import option_default
from .erm import ERM
from .registry import register

log = logging.getLogger(__name__)


def final_layer(model: nn.Module) -> nn.Module:
    """The network's final classifier layer.

    Args:
        model: The network.

    Returns:
        ``model.head`` (the built-in U-Net), else the last ``Conv2d`` in module order (an smp
        model's segmentation head).

    Raises:
        ValueError: If the network has no ``Conv2d`` layer.
    """
    model = unwrap(model)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        return head
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer to retrain")
    return convs[-1]


def freeze_all_but_final_layer(model: nn.Module) -> list[nn.Parameter]:
    """Set ``requires_grad`` False everywhere except the final layer.

    Args:
        model: The network.

    Returns:
        The final layer's parameters.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(final_layer(model).parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def split_per_region(tile_region: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile indices split in two halves within every region (seeded; the first gets the odd one).

    Args:
        tile_region: Region of every tile (-1: none, a group of its own).
        seed: The training seed.

    Returns:
        (fit indices, selection indices), each sorted.
    """
    rng = np.random.default_rng([int(seed), 7])
    fit, select = [], []
    for r in np.unique(tile_region):
        idx = rng.permutation(np.flatnonzero(tile_region == r))
        half = (len(idx) + 1) // 2
        fit.append(idx[:half])
        select.append(idx[half:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(select))


def head_inputs(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    device: torch.device,
    per_region: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of the 1x1 head at every labelled pixel with a region, and their label and region.

    At most ``per_region`` pixels per region are kept (a seeded sample), so memory is bounded.

    Raises:
        InputError: The head is not a 1x1 convolution at the labels' resolution.
    """
    head = final_layer(model)
    if not isinstance(head, nn.Conv2d) or head.kernel_size != (1, 1):
        raise InputError(
            "config: strategies.lastlayer",
            f"the final layer {head} is not a 1x1 convolution",
            "use the built-in unet or an smp head with kernel_size 1",
        )
    seen: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach()))
    feats, labels, regions = [], [], []
    model.eval()
    try:
        with torch.no_grad():
            for b in batches:
                model(b["image"].to(device))
                x, keep = seen["x"].float(), (b["valid"] & (b["regions"] >= 0)).to(device)
                if x.shape[-2:] != keep.shape[-2:]:
                    raise InputError(
                        "config: strategies.lastlayer",
                        "the head's input is not at the labels' resolution",
                        "use the built-in unet",
                    )
                feats.append(x.permute(0, 2, 3, 1)[keep].cpu())
                labels.append(b["label"].to(device)[keep].cpu())
                regions.append(b["regions"].to(device)[keep].cpu())
    finally:
        hook.remove()
    x, y, r = torch.cat(feats), torch.cat(labels).long(), torch.cat(regions).long()
    gen = torch.Generator().manual_seed(int(seed))
    keep = (
        torch.cat(
            [
                torch.nonzero(r == g).flatten()[torch.randperm(int((r == g).sum()), generator=gen)][
                    :per_region
                ]
                for g in torch.unique(r)
            ]
        )
        .sort()
        .values
    )
    return x[keep], y[keep], r[keep]


def fit_head(
    head: nn.Conv2d,
    x: torch.Tensor,
    y: torch.Tensor,
    groups: torch.Tensor,
    l2: float,
    *,
    tol: float,
    max_steps: int,
    seed: int = 0,
) -> dict[str, float]:
    """Re-initialise ``head`` and fit it, group-balanced, to convergence (L-BFGS).

    Minimises ``sum_g (1/G) mean_{i in g} CE_i + l2 * |W|^2`` (every group the same total
    weight) until the loss changes by less than ``tol`` or ``max_steps`` iterations.

    Returns:
        ``steps`` (iterations) and ``loss`` (final objective).
    """
    torch.manual_seed(int(seed))
    head.reset_parameters()
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    w = (1.0 / (counts[inverse].float() * len(counts))).to(head.weight.device)
    x, y = x.to(head.weight.device), y.to(head.weight.device)
    params = [p for p in head.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=int(max_steps),
        tolerance_change=float(tol),
        tolerance_grad=1e-9,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        opt.zero_grad()
        weight = head.weight.flatten(1)
        logits = x @ weight.T + (head.bias if head.bias is not None else 0.0)
        loss = (w * F.cross_entropy(logits, y, reduction="none")).sum()
        loss = loss + l2 * (weight**2).sum()
        loss.backward()
        return loss

    opt.step(objective)
    loss = float(objective().detach())
    steps = int(opt.state[params[0]].get("n_iter", 0))
    return {"steps": steps, "loss": loss}


@register
class LastLayer(ERM):
    """DFR: ERM, then the head re-initialised and refit on half of the validation tiles.

    After training (:meth:`on_training_end`), the kept ERM model's body is frozen; the head is
    re-initialised and fit, region-balanced, to convergence on the labelled pixels of one half
    of every region's validation tiles, once per L2 strength of ``l2_grid``; the strength whose
    head scores best (overall + worst region) on the other half is kept.
    """

    name = "lastlayer"
    uses_regions = True

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        l2_grid: list[float] | None = None,
        tol: float | None = None,
        max_steps: int | None = None,
        pixels_per_region: int | None = None,
        seed: int = 0,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        if strength is not None:
            raise InputError(
                "config: strategies.lastlayer.strength",
                "lastlayer has no strength knob",
                "remove strength; set l2_grid instead",
            )
        grid = option_default("l2_grid") if l2_grid is None else l2_grid
        self.l2_grid = [float(v) for v in grid]
        self.tol = float(option_default("tol") if tol is None else tol)
        self.max_steps = int(option_default("max_steps") if max_steps is None else max_steps)
        per = (
            option_default("pixels_per_region") if pixels_per_region is None else pixels_per_region
        )
        self.pixels_per_region, self.seed = int(per), int(seed)
        if not self.l2_grid or min(self.l2_grid) < 0:
            raise InputError(
                "config: strategies.lastlayer.l2_grid",
                f"l2_grid {self.l2_grid} is empty or negative",
                "use e.g. [0.0001, 0.001, 0.01]",
            )
        self.refit: dict[str, Any] = {}

    def state_dict(self):
        """The base state plus the refit's record (chosen L2, iterations, per-L2 scores)."""
        return {**super().state_dict(), "refit": dict(self.refit)}

    def on_training_end(self, session):
        """Refit the kept model's head on half of the validation tiles; keep the best L2."""
        session.restore_best()
        fit, select = split_per_region(session.val_tile_regions(), self.seed)
        x, y, r = head_inputs(
            session.model,
            session.val_batches(fit),
            session.device,
            self.pixels_per_region,
            self.seed,
        )
        if len(y) == 0:
            log.warning("lastlayer: no labelled validation pixel in a region; head kept as ERM's")
            return
        head, trials, best = final_layer(session.model), [], None
        for l2 in self.l2_grid:
            stats = fit_head(
                head, x, y, r, l2, tol=self.tol, max_steps=self.max_steps, seed=self.seed
            )
            val = session.val_summary(select)
            score = val["headline"] + val["worst"] if np.isfinite(val["worst"]) else -np.inf
            trials.append({"l2": l2, **stats, "score": float(score)})
            log.info(
                "lastlayer: l2 %g: %d L-BFGS iterations, loss %.4f, held-out score %.4f",
                l2, stats["steps"], stats["loss"], score,
            )  # fmt: skip
            if best is None or score > best[0]:
                best = (score, l2, {k: v.detach().clone() for k, v in head.state_dict().items()})
        head.load_state_dict(best[2])
        self.refit = {
            "l2": best[1],
            "trials": trials,
            "fit_tiles": len(fit),
            "select_tiles": len(select),
            "pixels": len(y),
        }
        session.keep_current()
