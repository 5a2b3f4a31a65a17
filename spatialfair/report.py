"""An evaluation's metrics as pandas objects, with fairlearn-style accessors.

:class:`Report` reads the ``metrics.json`` that evaluation (or aggregation over seeds) writes,
so a report of a script run and of a workflow run are the same. Summaries (``difference``,
``group_min`` ...) leave out small regions and regions without the metric's class, as the
evaluation does; ``by_region`` shows every region with its ``small`` and ``absent`` flags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import InputError

#: Columns of a region record that are not metric values.
_REGION_FIELDS = (
    "id",
    "name",
    "n_pixels",
    "n_tiles",
    "n_units",
    "small",
    "absent",
    "deviation",
    "deviation_ci_low",
    "deviation_ci_high",
    "n_replicates",
    "n_boot",
    "effective_blocks",
    "ci_note",
    "ci_excludes_zero",
    "worst_share",
    "statistic",
    "p_value",
    "significant",
    "direction",
)


class Report:
    """Per-region and overall metrics of one evaluated run.

    The region summaries (:meth:`difference`, :meth:`group_min`, :meth:`group_max`,
    :meth:`ratio`, :meth:`worst_region`) take ``metric`` (default: :attr:`headline`) and the
    keyword ``partitioning`` (default: :attr:`primary`); they leave out small regions and
    regions without the metric's class, and raise :class:`~spatialfair.errors.InputError` for
    an unknown metric or partitioning.

    Args:
        metrics: The content of a ``metrics.json`` written by
            :func:`~spatialfair.evaluate.evaluate_dataset` or
            :func:`~spatialfair.aggregate.aggregate_replicates`.
        path: Where it was read from, if anywhere (shown in errors).
    """

    def __init__(self, metrics: dict[str, Any], path: str | Path | None = None) -> None:
        self.metrics = metrics
        self.path = Path(path) if path is not None else None

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a written ``metrics.json``.

        Args:
            path: The file, e.g. ``results/<dataset>/<run>/fairness/metrics.json``.

        Returns:
            The report.

        Raises:
            InputError: If the file does not exist.
        """
        path = Path(path)
        if not path.exists():
            raise InputError(path, "no metrics.json here", "evaluate the run first")
        return cls(json.loads(path.read_text()), path)

    @property
    def headline(self) -> str:
        """The dataset's headline metric, the default of every accessor."""
        return str(self.metrics["headline_metric"])

    @property
    def primary(self) -> str:
        """The primary partitioning (the training partitioning), the default partitioning."""
        return str(self.metrics["primary_partitioning"])

    @property
    def partitionings(self) -> list[str]:
        """Names of every evaluated partitioning."""
        return list(self.metrics["partitionings"])

    @property
    def metric_names(self) -> list[str]:
        """Names of every metric."""
        return list(self.metrics["overall"])

    def _partitioning(self, partitioning: str | None) -> dict[str, Any]:
        name = partitioning or self.primary
        if name not in self.metrics["partitionings"]:
            raise InputError(
                self.path or "report",
                f"no partitioning '{name}'",
                f"use one of {self.partitionings}",
            )
        return self.metrics["partitionings"][name]

    def _metric(self, metric: str | None) -> str:
        name = metric or self.headline
        if name not in self.metrics["overall"]:
            raise InputError(
                self.path or "report", f"no metric '{name}'", f"use one of {self.metric_names}"
            )
        return name

    def by_region(
        self, partitioning: str | None = None, *, metric: str | None = None
    ) -> pd.DataFrame | pd.Series:
        """Per-region values, one row per region of a partitioning.

        Args:
            partitioning: The partitioning (default: :attr:`primary`).
            metric: Only this metric, as a Series; default: every metric plus the region
                flags and test results, as a DataFrame.

        Returns:
            A DataFrame (or Series) indexed by region name.

        Raises:
            InputError: If the partitioning or metric does not exist.
        """
        table = pd.DataFrame(self._partitioning(partitioning)["regions"]).set_index("name")
        table.index.name = "region"
        if metric is not None:
            return table[self._metric(metric)].astype(float)
        first = [c for c in _REGION_FIELDS if c in table.columns and c != "name"]
        return table[first + [m for m in self.metric_names if m in table.columns]]

    def overall(self, *, metric: str | None = None) -> pd.Series | float:
        """Metrics over all evaluated pixels.

        Args:
            metric: Only this metric, as a float; default: every metric, as a Series.

        Returns:
            A float, or a Series indexed by metric name.
        """
        if metric is not None:
            return float(self.metrics["overall"][self._metric(metric)])
        return pd.Series(self.metrics["overall"], dtype=float, name="overall")

    def _summary(self, key: str, metric: str | None, partitioning: str | None) -> float:
        summary = self._partitioning(partitioning)["summaries"][self._metric(metric)]
        value = summary[key]
        return float("nan") if value is None else float(value)

    def difference(self, metric: str | None = None, *, partitioning: str | None = None) -> float:
        """Best minus worst region; NaN when fewer than one region counts."""
        return self._summary("difference", metric, partitioning)

    def group_min(self, metric: str | None = None, *, partitioning: str | None = None) -> float:
        """The worst region's value: the smallest region value."""
        return self._summary("group_min", metric, partitioning)

    def group_max(self, metric: str | None = None, *, partitioning: str | None = None) -> float:
        """The best region's value: the largest region value."""
        return self._summary("group_max", metric, partitioning)

    def ratio(self, metric: str | None = None, *, partitioning: str | None = None) -> float:
        """Worst over best region: ``group_min / group_max``."""
        return self._summary("ratio", metric, partitioning)

    def worst_region(
        self, metric: str | None = None, *, partitioning: str | None = None
    ) -> str | None:
        """Name of the region with :meth:`group_min`, or None when no region counts."""
        return self._partitioning(partitioning)["summaries"][self._metric(metric)]["worst_region"]

    def interval(
        self, summary: str = "difference", *, partitioning: str | None = None
    ) -> tuple[float, float]:
        """Block-bootstrap interval of a headline summary of one map (docs/audit.md).

        Args:
            summary: ``difference``, ``ratio`` or ``worst_value`` (the worst region's value).
            partitioning: The partitioning (default: :attr:`primary`).

        Returns:
            ``(low, high)``; NaNs where the map has too few blocks (the ``note`` of
            ``summaries.<headline>.bootstrap`` says so) or no intervals were computed.

        Raises:
            InputError: For an unknown summary or partitioning.
        """
        if summary not in ("difference", "ratio", "worst_value"):
            raise InputError(
                self.path or "report",
                f"no interval of '{summary}'",
                "use difference, ratio or worst_value",
            )
        entry = self._bootstrap(partitioning).get(summary) or {}
        low, high = entry.get("ci_low"), entry.get("ci_high")
        return (
            float("nan") if low is None else float(low),
            float("nan") if high is None else float(high),
        )

    def worst_share(self, *, partitioning: str | None = None) -> float:
        """Share of the bootstrap replicates in which :meth:`worst_region` (headline metric)
        is the worst region; NaN without intervals."""
        value = self._bootstrap(partitioning).get("worst_share")
        return float("nan") if value is None else float(value)

    def _bootstrap(self, partitioning: str | None) -> dict[str, Any]:
        """``summaries.<headline>.bootstrap`` of a partitioning ({} where absent)."""
        summaries = self._partitioning(partitioning)["summaries"][self.headline]
        return summaries.get("bootstrap") or {}

    def __repr__(self) -> str:
        m = self.metrics
        return (
            f"Report({m.get('dataset')}/{m.get('run')}: {self.headline} overall "
            f"{self.overall(metric=self.headline):.4f}, difference over "
            f"'{self.primary}' {self.difference():.4f})"
        )


__all__ = ["Report"]
