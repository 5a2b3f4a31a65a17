"""spatialfair: fairness-aware segmentation of satellite rasters.

Tile GeoTIFFs, train crop and flood segmentation models with penalties that even out accuracy
across geographic regions, write georeferenced predictions, and measure and map the per-region
accuracy gap. :class:`Project` runs a dataset's pipeline from a script; the stage functions
below are what it, the ``spatialfair`` command and the Snakemake workflow call. Stage
functions, :class:`Project` and :class:`Report` load lazily, so ``import spatialfair`` stays
light (no torch, no pandas): every ``spatialfair`` command and workflow job imports the package
first.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import dataset_config, load_config, strategy_runs
from .errors import DependencyError, InputError, SpatialfairError, StateError
from .layout import ResultsLayout
from .settings import Settings

__version__ = "0.1.0"

#: Public name -> (module, attribute) of the stage functions, imported on first use. Names
#: differ from their modules (``train_model``, not ``train``) so ``spatialfair.train`` stays
#: the module.
_STAGES = {
    "make_demo": ("spatialfair.demo", "make_demo"),
    "validate_dataset": ("spatialfair.validation", "validate_dataset"),
    "tile_dataset": ("spatialfair.tiling", "tile_dataset"),
    "build_partitions": ("spatialfair.partitions", "build_partitions"),
    "split_tiles": ("spatialfair.splits", "split_tiles"),
    "train_model": ("spatialfair.train", "train"),
    "train_replicates": ("spatialfair.train", "train_replicates"),
    "predict_scenes": ("spatialfair.predict", "predict_scenes_from_bundle"),
    "evaluate_run": ("spatialfair.evaluate", "evaluate_dataset"),
    "aggregate_seeds": ("spatialfair.aggregate", "aggregate_replicates"),
    "write_maps": ("spatialfair.maps", "write_maps"),
    "compare_runs": ("spatialfair.compare", "compare_strategies"),
    "audit_map": ("spatialfair.audit", "audit_map"),
}


#: Public classes imported on first use (their modules import pandas).
_CLASSES = {
    "Project": ("spatialfair.project", "Project"),
    "Report": ("spatialfair.report", "Report"),
}
_LAZY = {**_STAGES, **_CLASSES}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'spatialfair' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DependencyError",
    "InputError",
    "Project",
    "Report",
    "ResultsLayout",
    "Settings",
    "SpatialfairError",
    "StateError",
    "__version__",
    "dataset_config",
    "load_config",
    "strategy_runs",
    *_STAGES,
]
