"""Typed, read-only settings: one frozen dataclass per section of the config.

The schema (``spatialfair/schemas/config.schema.yaml``) is the only source of defaults; these
classes only give the validated values names and types, so library functions take a
:class:`Settings` (or one of its sections) instead of the whole config dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from .config import load_schema

T = TypeVar("T")


@dataclass(frozen=True)
class TilingSettings:
    """``tiling``: how scenes are cut into square tiles."""

    size: int
    overlap: int
    min_valid_fraction: float
    scenes_per_job: int


@dataclass(frozen=True)
class PartitionSettings:
    """``partitions``: the grids and k-means partitionings drawn over the study area."""

    grid_max: int
    offset_grids: int
    kmeans: tuple[int, ...]
    cluster_gap: float


@dataclass(frozen=True)
class SplitSettings:
    """``split``: the spatial-block train/val/test split."""

    block_tiles: int
    val: float
    test: float
    partitioning: str
    seed: int


@dataclass(frozen=True)
class ReplicateSettings:
    """``replicates``: training seeds and spatial folds per strategy."""

    seeds: int
    folds: int
    buffer_blocks: int


@dataclass(frozen=True)
class ModelSettings:
    """``model``: the segmentation network."""

    arch: str
    encoder: str
    encoder_weights: str | None
    encoder_weights_min_share: float
    width: int
    depth: int


@dataclass(frozen=True)
class LossSettings:
    """``training.loss``: the per-pixel loss (cross-entropy or focal, class weights)."""

    kind: str
    class_weights: str | tuple[float, ...] | None
    focal_gamma: float

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> LossSettings:
        """The settings of a config's ``training.loss`` block, schema defaults filled in.

        Args:
            block: The block (validated or not).

        Returns:
            The settings; a list of class weights becomes a tuple.
        """
        spec = load_schema()["properties"]["training"]["properties"]["loss"]["properties"]
        values = {**{k: v["default"] for k, v in spec.items()}, **dict(block)}
        if isinstance(values["class_weights"], list):
            values["class_weights"] = tuple(values["class_weights"])
        return cls(**values)


@dataclass(frozen=True)
class TrainingSettings:
    """``training``: optimiser, schedule, device and model selection."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    grad_clip: float
    device: str
    amp: bool
    num_workers: int
    augment: bool
    partitioning: str
    deterministic: bool
    selection: str
    selection_min_region_pixels: int
    selection_min_class_pixels: int
    loss: LossSettings

    def __post_init__(self) -> None:
        # A config block (a dict) becomes LossSettings, with the schema's defaults.
        if isinstance(self.loss, Mapping):
            object.__setattr__(self, "loss", LossSettings.from_block(self.loss))


@dataclass(frozen=True)
class PredictionSettings:
    """``prediction``: sliding-window inference over whole scenes."""

    window: int
    overlap: int
    batch_size: int
    probabilities: str


@dataclass(frozen=True)
class PrimarySettings:
    """``evaluation.primary``: the one comparison declared in advance, tested at alpha alone."""

    strategy: str
    endpoint: str
    region: str | None
    partitioning: str

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> PrimarySettings:
        """The settings of a config's ``evaluation.primary`` block, schema defaults filled in.

        Args:
            block: The block (validated or not).

        Returns:
            The settings; ``region`` is None when not given.
        """
        spec = load_schema()["properties"]["evaluation"]["properties"]["primary"]["properties"]
        defaults = {k: v["default"] for k, v in spec.items() if "default" in v}
        values = {"region": None, **defaults, **dict(block)}
        return cls(**values)


@dataclass(frozen=True)
class EvaluationSettings:
    """``evaluation``: which split is scored, region thresholds and significance tests."""

    split: str
    min_region_pixels: int
    min_class_pixels: int
    significance: str
    verdict_test: str
    significance_unit: str
    n_simulations: int
    alpha: float
    n_boot: int
    confidence: float
    primary: PrimarySettings | None

    def __post_init__(self) -> None:
        # A config block (a dict) becomes PrimarySettings; None means no primary comparison.
        if isinstance(self.primary, Mapping):
            object.__setattr__(self, "primary", PrimarySettings.from_block(self.primary))


#: Config section name -> its settings class.
SECTIONS: dict[str, type] = {
    "tiling": TilingSettings,
    "partitions": PartitionSettings,
    "split": SplitSettings,
    "replicates": ReplicateSettings,
    "model": ModelSettings,
    "training": TrainingSettings,
    "prediction": PredictionSettings,
    "evaluation": EvaluationSettings,
}


@cache
def _schema_defaults(name: str) -> dict[str, Any]:
    props = load_schema()["properties"][name].get("properties", {})
    return {key: spec["default"] for key, spec in props.items() if "default" in spec}


def section_defaults(name: str) -> dict[str, Any]:
    """The schema's defaults of one config section.

    Args:
        name: A section of the config, e.g. ``"training"``, or a top-level key such as
            ``"seed"`` (then a one-item dict ``{name: default}``).

    Returns:
        A new dict of key -> default value.

    Raises:
        KeyError: If the schema has no such section.
    """
    spec = load_schema()["properties"][name]
    if "properties" not in spec:
        return {name: spec["default"]}
    return dict(_schema_defaults(name))


def _section(cls: type[T], name: str, block: Mapping[str, Any] | None) -> T:
    values = {**section_defaults(name), **dict(block or {})}
    for field in dataclasses.fields(cls):
        if isinstance(values.get(field.name), list):
            values[field.name] = tuple(values[field.name])
    return cls(**values)


@dataclass(frozen=True)
class Settings:
    """Every setting a pipeline stage reads, as filled in by the schema.

    Build it with :meth:`from_config`; change a value with :func:`dataclasses.replace`.
    """

    seed: int
    results: str
    tiling: TilingSettings
    partitions: PartitionSettings
    split: SplitSettings
    replicates: ReplicateSettings
    model: ModelSettings
    training: TrainingSettings
    prediction: PredictionSettings
    evaluation: EvaluationSettings

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None) -> Settings:
        """Settings of a config (as :func:`~spatialfair.config.load_config` returns it).

        Args:
            config: A schema-validated config; missing sections and keys take the schema's
                defaults, so ``None`` gives the defaults.

        Returns:
            The settings.

        Raises:
            TypeError: If a section holds a key the settings do not know (an unvalidated
                config).
        """
        config = config or {}
        top = {key: config.get(key, section_defaults(key)[key]) for key in ("seed", "results")}
        sections = {name: _section(kind, name, config.get(name)) for name, kind in SECTIONS.items()}
        return cls(seed=int(top["seed"]), results=str(top["results"]), **sections)

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain dict (lists as in the config), e.g. for a JSON record.

        Args:
            name: A key of :data:`SECTIONS`.

        Returns:
            The section's values by key, in schema order.
        """
        values = dataclasses.asdict(getattr(self, name))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def as_config(self) -> dict[str, Any]:
        """The settings as the config's keys and sections (for a JSON record of a run).

        Returns:
            ``seed``, ``results`` and one dict per section of :data:`SECTIONS`.
        """
        return {
            "seed": self.seed,
            "results": self.results,
            **{name: self.section(name) for name in SECTIONS},
        }


__all__ = [
    "SECTIONS",
    "EvaluationSettings",
    "LossSettings",
    "ModelSettings",
    "PartitionSettings",
    "PrimarySettings",
    "PredictionSettings",
    "ReplicateSettings",
    "Settings",
    "SplitSettings",
    "TilingSettings",
    "TrainingSettings",
    "section_defaults",
]
