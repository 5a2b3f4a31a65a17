"""The end of a run: the kept weights and everything prediction needs, as ``model.pt``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..export import training_pixel_size
from ..models import save_bundle
from .plan import Plan

log = logging.getLogger("spatialfair.train")


def write_bundle(
    path: Path,
    plan: Plan,
    best: Mapping[str, Any],
    *,
    norm: tuple[list[float], list[float]],
    strategy_state: Mapping[str, Any],
    amp_dtype: str,
) -> None:
    """Write the model bundle of the kept epoch ``best`` (rank 0 only) and log it.

    Args:
        path: The ``model.pt`` to write.
        plan: The run's plan (dataset, store, settings, regions, loss).
        best: The kept selection (``state``, ``epoch``, ``metrics``, ``score``).
        norm: The training tiles' band means and standard deviations.
        strategy_state: The strategy's state after training.
        amp_dtype: The mixed-precision dtype used (``float32`` without).
    """
    ds, run = plan.ds, plan.run
    save_bundle(
        path,
        best["state"],
        model_config=dict(plan.mcfg),
        in_channels=len(plan.store.bands),
        num_classes=ds.num_classes,
        classes=ds.classes,
        colors=ds.colors,
        bands=plan.store.bands,
        bands_configured=bool(ds.bands),
        norm_mean=norm[0],
        norm_std=norm[1],
        tile_size=plan.store.tile_size,
        task=ds.task,
        ignore_index=ds.ignore_index,
        nodata=ds.nodata,
        strategy=run.name,
        strategy_state={
            **strategy_state,
            "strategy": run.strategy,
            "options": dict(run.options),
        },
        config={**plan.settings.as_config(), "seed": plan.seed},
        epoch=best["epoch"],
        val_metrics=best["metrics"],
        region_names=plan.region_names,
        partitioning=plan.partitioning,
        pixel_size_m=training_pixel_size(plan.store.meta),
        amp_dtype=amp_dtype,
        seed=plan.seed,
        split_column=plan.split_column,
        selection=plan.selection,
        loss=plan.loss.record(),
    )
    log.info(
        "%s: kept epoch %d (%s score %.4f) -> %s",
        run.name,
        best["epoch"],
        plan.selection,
        best["score"],
        path,
    )


__all__ = ["write_bundle"]
