"""The verdict of one comparison row in words (``fairer``, ``less fair``, ``no evidence``).

The words name the endpoint, its paired difference to ERM with the unadjusted interval, the
(Holm) p-value, the MDE and the overall cost; docs/verdicts.md explains each part.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .. import stats
from .columns import COST, LOWER_IS_FAIRER


def _fmt_ci(mean: float, low: float, high: float) -> str:
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def _direction(endpoint: str, significant: bool, low: float, high: float) -> str:
    """``fairer``, ``less fair`` or ``no evidence`` from a significant change's interval."""
    down, up = significant and high < 0, significant and low > 0
    better, worse = (down, up) if endpoint in LOWER_IS_FAIRER else (up, down)
    return "fairer" if better else "less fair" if worse else "no evidence"


def _impossible_note(n: int, m: int, alpha: float) -> str:
    """Why the sign-flip test can give no verdict with n seeds and m comparisons."""
    return (
        f" (no verdict possible: the sign-flip test's smallest p with {n} seeds is "
        f"2^(1-{n}) = {2.0 ** (1 - n):.3g}, times m={m} comparison(s) = "
        f"{m * 2.0 ** (1 - n):.3g} >= alpha {alpha:g}; it needs "
        f"{stats.signflip_seeds_needed(m, alpha)} seeds)"
    )


def verdict(
    row: dict[str, Any] | pd.Series,
    alpha: float,
    test: str,
    *,
    region: str | None = None,
    erm_gap: float = math.nan,
) -> str:
    """The verdict in words of one comparison row (see docs/verdicts.md).

    Args:
        row: A row of the comparison table (with ``endpoint``, ``hypothesis``, ``mde``,
            ``n_compared``).
        alpha: Level of the primary test and family-wise error rate of the exploratory ones.
        test: The paired test used (for the note on the smallest reachable p-value).
        region: The region of a ``region`` endpoint (named in the text).
        erm_gap: ERM's mean ``difference_fixed``: a ``no evidence`` whose MDE exceeds it says
            that the design could not have seen even closing the whole gap.

    Returns:
        The verdict, e.g. ``fairer``, ``less fair``, ``no evidence`` or ``baseline``.
    """
    if row["role"] == "baseline":
        return "baseline"
    if pd.isna(row["n_paired"]):
        return "no ERM run: no comparison"
    n = int(row["n_paired"])
    if n == 0:
        return "no seed shared with ERM: no comparison"
    if n == 1:
        return "one run: no evidence possible"
    ep = row["endpoint"]
    g = {k: row[f"delta_{ep}_{k}"] for k in ("mean", "ci_low_unadj", "ci_high_unadj")}
    primary = row["hypothesis"] == "primary"
    p = row[f"delta_{ep}_p" if primary else f"delta_{ep}_p_holm"]
    word = _direction(ep, bool(p < alpha), g["ci_low_unadj"], g["ci_high_unadj"])
    name = f"region {region}" if ep == "region" else ep
    c = [row[f"delta_{COST}_{k}"] for k in ("mean", "ci_low_unadj", "ci_high_unadj")]
    text = (
        f"{word} ({'primary, ' if primary else ''}{name} "
        f"{_fmt_ci(g['mean'], g['ci_low_unadj'], g['ci_high_unadj'])} unadjusted 95 % CI, "
        f"{'p' if primary else 'Holm p'}={p:.2g}, MDE {row['mde']:.3f}); "
        f"{COST} {_fmt_ci(*c)}; {n} seeds"
    )
    if word == "no evidence" and math.isinf(row["mde"]):
        text += _impossible_note(n, int(row["n_compared"]), alpha)
    elif word == "no evidence" and ep == "difference_fixed" and row["mde"] > erm_gap:
        text += (
            f" (MDE > ERM's whole gap {erm_gap:.3f}: this design could not have seen even "
            "closing it; add seeds or test blocks)"
        )
    return text


def verdict_kind(text: str) -> str:
    """The verdict's key word.

    Args:
        text: A verdict in words (:func:`verdict`).

    Returns:
        ``fairer``, ``less fair``, ``no evidence``, ``baseline`` or ``none``.
    """
    for kind in ("baseline", "fairer", "less fair", "no evidence"):
        if str(text).startswith(kind):
            return kind
    return "none" if not str(text).startswith("one run") else "no evidence"
