"""The registry of strategies by name, and :func:`make_strategy`, which builds one."""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from ..errors import InputError
from .base import Strategy

#: The one registry of strategy names (the config schema's enums are checked against it);
#: every strategy module adds its classes with :func:`register`.
STRATEGIES: dict[str, type[Strategy]] = {}

S = TypeVar("S", bound=type[Strategy])


def register(cls: S) -> S:
    """Class decorator: add ``cls`` to :data:`STRATEGIES` under ``cls.name``.

    Raises:
        ValueError: The name is taken by another class.
    """
    if STRATEGIES.get(cls.name, cls) is not cls:
        raise ValueError(f"strategy name {cls.name!r} is registered twice")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(
    name: str, num_regions: int, strength: float | None = None, **opts: Any
) -> Strategy:
    """Build strategy ``name`` (one of :data:`STRATEGIES`).

    Args:
        name: Strategy name.
        num_regions: Regions of the training partitioning.
        strength: The strategy's knob (None: its default).
        **opts: The strategy's own options (e.g. ``C`` for groupdro, ``warmup_steps``) plus
            context the trainer passes: ``region_counts``, ``total_steps``,
            ``steps_per_epoch``, ``partition_sizes``, ``num_classes``, ``seed``,
            ``region_class_counts``, ``epochs``. Context a strategy does not use is dropped.

    Returns:
        The strategy.

    Raises:
        InputError: Unknown strategy name or option.
    """
    if name not in STRATEGIES:
        raise InputError(
            "config: strategies", f"unknown strategy '{name}'", f"use one of {sorted(STRATEGIES)}"
        )
    cls = STRATEGIES[name]
    context = {
        "region_counts",
        "region_class_counts",
        "total_steps",
        "steps_per_epoch",
        "partition_sizes",
        "num_classes",
        "seed",
        "epochs",
    }
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    opts = {k: v for k, v in opts.items() if k not in context or k in accepted}
    return cls(num_regions, strength, **opts)
