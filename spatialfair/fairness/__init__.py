"""Fairness-aware training strategies: per-region losses and the penalties that even them out.

Where things live:

- ``hooks``: :class:`TrainingHooks` (what the trainer calls, with defaults: phases, trainable
  parameters, sampler weights, phase transitions) and :class:`SessionView`.
- ``base``: :class:`Strategy` (hooks + the loss from per-region statistics), :func:`region_loss_sums`.
- ``registry``: :data:`STRATEGIES` (filled by each module's ``@register``), :func:`make_strategy`.
- ``groups``: region or (region, class) groups. ``erm``: the baseline.
- ``reweighting``: ``reweight`` and ``balanced``. ``dro``: ``groupdro`` and ``cvar``.
- ``rex``: ``variance`` (V-REx). ``spad``: "Fairness by 'Where'". ``jtt``: Just Train Twice.
- ``dfr``: ``lastlayer`` (deep feature reweighting).

Adding a strategy: one module with a ``@register`` class, an import below, the schema enums,
tests. Formulas, defaults and references: docs/strategies.md.
"""

from __future__ import annotations

from .base import Strategy, region_loss_sums
from .dfr import LastLayer, final_layer, freeze_all_but_final_layer
from .dro import GroupDRO, WorstCVaR, cvar_weights
from .erm import ERM
from .groups import GROUPINGS, GroupedStrategy
from .hooks import SessionView
from .jtt import JTT
from .registry import STRATEGIES, make_strategy, register
from .reweighting import (
    Balanced,
    Reweight,
    balanced_weights,
    labelled_pixels,
    region_balanced_weights,
)
from .rex import VarianceREx
from .spad import SPAD, confusion_f_score, spad_weights

__all__ = [
    "ERM",
    "GROUPINGS",
    "JTT",
    "SPAD",
    "STRATEGIES",
    "Balanced",
    "GroupDRO",
    "GroupedStrategy",
    "LastLayer",
    "Reweight",
    "SessionView",
    "Strategy",
    "VarianceREx",
    "WorstCVaR",
    "confusion_f_score",
    "balanced_weights",
    "cvar_weights",
    "labelled_pixels",
    "final_layer",
    "freeze_all_but_final_layer",
    "make_strategy",
    "region_balanced_weights",
    "region_loss_sums",
    "register",
    "spad_weights",
]
