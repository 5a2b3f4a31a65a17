"""The figure ``comparison.png``: fairness against accuracy, one point per run.

Two panels (the gap over the fixed region set, the SPAD score) against the overall headline
metric, with 95 % confidence intervals over seeds on both axes; a strength sweep is joined by
a line, the verdict is the marker (filled: fairer, X: less fair, open: no evidence), ERM is a
black star and the dashed step line is the Pareto frontier of the means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .table import pareto_front
from .verdicts import verdict_kind

#: Marker face and shape per verdict kind in the plot.
_STYLE = {
    "fairer": ("o", True),
    "less fair": ("X", True),
    "no evidence": ("o", False),
    "none": ("o", False),
}


def _errorbars(ax: Any, sub: pd.DataFrame, ycol: str, color: Any) -> None:
    """95 % CI over seeds on both axes (nothing where a run has one seed)."""
    x, y = sub["overall_mean"].to_numpy(float), sub[f"{ycol}_mean"].to_numpy(float)
    xerr = np.abs(np.vstack([x - sub["overall_ci_low"], sub["overall_ci_high"] - x]))
    yerr = np.abs(np.vstack([y - sub[f"{ycol}_ci_low"], sub[f"{ycol}_ci_high"] - y]))
    ok = np.isfinite(xerr).all(axis=0) & np.isfinite(yerr).all(axis=0)
    if ok.any():
        ax.errorbar(
            x[ok],
            y[ok],
            xerr=xerr[:, ok],
            yerr=yerr[:, ok],
            fmt="none",
            ecolor=color,
            elinewidth=1,
            capsize=2,
            alpha=0.7,
            zorder=3,
        )


def _draw_strategy(ax: Any, sub: pd.DataFrame, ycol: str, color: Any, label: str) -> None:
    """One strategy's points: sweep joined, verdict as marker fill/shape, strengths named."""
    runs = sub[sub["role"] != "selected"]
    runs = runs.assign(_k=runs["strength"].fillna(-np.inf)).sort_values("_k")
    if len(runs) > 1:
        ax.plot(
            runs["overall_mean"], runs[f"{ycol}_mean"], "-", color=color, alpha=0.6, linewidth=1.2
        )
    _errorbars(ax, sub, ycol, color)
    for i, (_, r) in enumerate(sub.iterrows()):
        marker, filled = _STYLE[verdict_kind(r["verdict"])]
        selected = r["role"] == "selected"
        ax.scatter(
            [r["overall_mean"]],
            [r[f"{ycol}_mean"]],
            s=110 if selected else 55,
            marker="D" if selected and marker == "o" else marker,
            facecolor=color if filled else "white",
            edgecolor=color if not filled else "black",
            linewidth=1.6 if selected else 1.2,
            zorder=4,
            label=label if i == 0 else None,
        )
        tag = (
            "selected" if selected else (f"{r['strength']:g}" if pd.notna(r["strength"]) else None)
        )
        if tag and np.isfinite([r["overall_mean"], r[f"{ycol}_mean"]]).all():
            ax.annotate(
                tag,
                (r["overall_mean"], r[f"{ycol}_mean"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=color,
            )


def _legend(ax: Any) -> None:
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    grey = "#555555"
    hollow = {"markerfacecolor": "white"}
    extra = [
        Line2D([], [], marker=marker, ls="", color=grey, label=label, **face)
        for marker, face, label in (
            ("o", {}, "filled: fairer (significant)"),
            ("o", hollow, "open: no evidence"),
            ("X", {}, "X: less fair (significant)"),
            ("D", hollow, "diamond: strength chosen on validation"),
        )
    ]
    ax.legend(handles + extra, labels + [h.get_label() for h in extra], fontsize=7, loc="best")


def _draw_erm(ax: Any, sub: pd.DataFrame, ycol: str) -> None:
    """The baseline: a black star with its confidence intervals."""
    _errorbars(ax, sub, ycol, "black")
    ax.scatter(
        sub["overall_mean"],
        sub[f"{ycol}_mean"],
        marker="*",
        s=260,
        color="black",
        zorder=5,
        label="ERM (baseline)",
    )


def _draw_front(ax: Any, points: pd.DataFrame, ycol: str) -> None:
    """The Pareto frontier of the runs' means as a dashed step line (none without a front)."""
    x, y = points["overall_mean"].to_numpy(float), points[f"{ycol}_mean"].to_numpy(float)
    front = pareto_front(x, y)
    if front.any():
        order = np.argsort(x[front])
        ax.step(
            x[front][order],
            y[front][order],
            where="post",
            color="#777777",
            linestyle="--",
            linewidth=1,
            label="Pareto frontier (means)",
            zorder=2,
        )


def _draw_panel(ax: Any, table: pd.DataFrame, ycol: str, label: str, colors: dict) -> None:
    """One panel: every strategy's points, the Pareto frontier, the axis labels and grid."""
    for s in colors:
        sub = table[table["strategy"] == s]
        if s == "erm":
            _draw_erm(ax, sub, ycol)
            continue
        _draw_strategy(ax, sub, ycol, colors[s], s)
    _draw_front(ax, table[table["role"] != "selected"], ycol)
    ax.set_xlabel(f"overall {table['headline_metric'].iloc[0]} (higher is better)")
    ax.set_ylabel(label + " (lower is fairer)")
    ax.grid(alpha=0.3)


def plot_comparison(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Draw fairness (difference, SPAD score) against the overall headline metric, per run.

    Both axes carry 95 % confidence intervals over seeds; each strategy's verdict is its marker.

    Args:
        table: The comparison table.
        path: The PNG to write.
        title: Title of the figure.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..maps import save_figure

    h = table["headline_metric"].iloc[0]
    panels = [
        (
            "difference_fixed",
            f"difference of {h} between regions\n('{table['partitioning'].iloc[0]}', "
            "best − worst over the fixed region set)",
        ),
        ("spad", f"SPAD score of {h}\n(sum of MAD over generated grids)"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), dpi=120)
    strategies = list(dict.fromkeys(table["strategy"]))
    cmap = plt.get_cmap("tab10")
    colors = {s: cmap(i % 10) for i, s in enumerate(strategies)}
    for ax, (col, label) in zip(axes, panels):
        _draw_panel(ax, table, col, label, colors)
    _legend(axes[0])
    n = int(table["n_seeds"].max())
    fig.suptitle(
        (title or "Fairness vs accuracy per strategy (lower right is better)")
        + f"\nmeans over up to {n} seed(s); bars: 95 % CI over seeds; "
        f"verdict on {table['endpoint'].iloc[0]} against ERM",
        fontsize=10,
    )
    return save_figure(fig, path)
