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
    one_job: bool


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
    validate_every: int
    validate_after: float
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


@cache
def _dataset_defaults() -> dict[str, Any]:
    props = load_schema()["properties"]["datasets"]["additionalProperties"]["properties"]
    audit = props["audit"]["properties"]
    return {
        "audit": {key: spec["default"] for key, spec in audit.items()},
        "ignore_index": props["ignore_index"]["default"],
        "region_column": props["region_column"]["default"],
    }


@dataclass(frozen=True)
class AuditSettings:
    """Everything an audit reads besides its files: ``datasets.<name>.audit`` (how the map is
    read, the bootstrap blocks), the dataset's ``ignore_index`` and ``region_column``, and the
    config's ``evaluation``, ``partitions`` and ``seed``.

    Build it with :meth:`from_config` (the schema's defaults, then a config and dataset), and
    change values with :meth:`override`; a value out of range raises
    :class:`~spatialfair.errors.InputError`. What each option does: docs/audit.md.

    Attributes:
        class_map: Product value -> class, e.g. ``"0:land,1:water,3:nodata"``, or a mapping.
        threshold: For a probability raster (two classes): value >= threshold is class 1.
        band: Band of the prediction rasters (1-based).
        align: ``none`` (a grid mismatch is an error) or ``nearest`` (resample).
        block_size: Side in metres of the bootstrap and significance blocks, or ``"auto"``.
        range_cell: Side in metres of the cells the autocorrelation range is measured on.
        n_boot: Block-bootstrap replicates (0 = no intervals).
        confidence: Level of the confidence intervals.
        ignore_index: Label value of unlabelled pixels.
        region_column: Column of the regions file with the region names.
        evaluation: Region thresholds and the significance test.
        partitions: The generated partitionings.
        seed: Seed of the partitionings, the tests and the bootstrap.
    """

    class_map: str | Mapping[Any, Any] | None
    threshold: float | None
    band: int
    align: str
    block_size: float | str
    range_cell: float
    n_boot: int
    confidence: float
    ignore_index: int
    region_column: str
    evaluation: EvaluationSettings
    partitions: PartitionSettings
    seed: int

    def __post_init__(self) -> None:
        from .errors import InputError

        if self.align not in ("none", "nearest"):
            raise InputError(
                "align", f"unknown alignment {self.align!r}", "use 'none' or 'nearest'"
            )
        bs = self.block_size
        auto_or_positive = bs == "auto" or (isinstance(bs, (int, float)) and bs > 0)
        if not auto_or_positive or self.range_cell <= 0 or self.n_boot < 0:
            raise InputError(
                "audit settings",
                f"block_size {bs!r}, range_cell {self.range_cell}, n_boot {self.n_boot}",
                "block_size 'auto' or > 0 metres, range_cell > 0 metres, n_boot >= 0",
            )
        if not 0 < self.confidence < 1:
            raise InputError("confidence", f"{self.confidence}", "0 < confidence < 1")

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | None = None, dataset: str | None = None
    ) -> AuditSettings:
        """The audit settings of a config's dataset, schema defaults filled in.

        Args:
            config: A schema-validated config (None: the defaults).
            dataset: The dataset whose ``audit`` block, ``ignore_index`` and
                ``region_column`` apply (None: the defaults).

        Returns:
            The settings.
        """
        config = config or {}
        block = config["datasets"][dataset] if dataset is not None else {}
        defaults = _dataset_defaults()
        return cls(
            **{**defaults["audit"], **dict(block.get("audit") or {})},
            ignore_index=block.get("ignore_index", defaults["ignore_index"]),
            region_column=block.get("region_column", defaults["region_column"]),
            evaluation=_section(EvaluationSettings, "evaluation", config.get("evaluation")),
            partitions=_section(PartitionSettings, "partitions", config.get("partitions")),
            seed=config.get("seed", section_defaults("seed")["seed"]),
        )

    def override(self, **values: Any) -> AuditSettings:
        """A copy with every value that is not None replaced.

        Args:
            **values: Fields of these settings; ``evaluation`` and ``partitions`` may be
                (partial) mappings of their section's keys, which replace only those keys.

        Returns:
            The new settings.

        Raises:
            InputError: An unknown setting, or a value out of range.
        """
        from .errors import InputError

        values = {k: v for k, v in values.items() if v is not None}
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - names)
        sections = {}
        for key in ("evaluation", "partitions"):
            if isinstance(values.get(key), Mapping):
                current = dataclasses.asdict(getattr(self, key))
                unknown += [f"{key}.{k}" for k in values[key] if k not in current]
                sections[key] = {**current, **values[key]}
        if unknown:
            raise InputError(
                "audit settings", f"unknown setting(s) {unknown}", f"use {sorted(names)}"
            )
        for key, block in sections.items():
            values[key] = _section(type(getattr(self, key)), key, block)
        return dataclasses.replace(self, **values)


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
    "AuditSettings",
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
