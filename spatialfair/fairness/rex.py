"""V-REx: the mean group loss plus a penalty on the spread of the group losses."""

from __future__ import annotations

from ..errors import InputError
from .base import Strategy, option_default
from .registry import register


@register
class VarianceREx(Strategy):
    """V-REx: ``mean_r L_r + lambda * (1/m) sum_r (L_r - mean L)^2`` over the m present regions.

    Only the regions present in the batch enter (a running estimate of an absent region's loss
    is stale: it would add a spread the batch cannot reduce). lambda is ``warmup_strength``
    for ``warmup_steps`` (default: ``warmup_fraction`` of the run's steps), then ramps linearly
    to ``strength`` over ``ramp_steps`` (default: as long as the warm-up), so the penalty does
    not jump.
    """

    name = "variance"
    default_strength = 10.0

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        warmup_steps: int | None = None,
        warmup_fraction: float | None = None,
        ramp_steps: int | None = None,
        warmup_strength: float | None = None,
        total_steps: int | None = None,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        fraction = option_default("warmup_fraction") if warmup_fraction is None else warmup_fraction
        if not 0 <= float(fraction) < 1:
            raise InputError(
                "config: strategies.variance.warmup_fraction",
                f"warmup_fraction {fraction} is outside [0, 1)",
                "use e.g. 0.2",
            )
        if warmup_steps is None:  # a share of the run (none when the length is unknown)
            warmup_steps = round(float(fraction) * (total_steps or 0))
        self.warmup_steps = int(warmup_steps)
        self.ramp_steps = max(1, int(self.warmup_steps if ramp_steps is None else ramp_steps))
        self.warmup_strength = float(
            option_default("warmup_strength") if warmup_strength is None else warmup_strength
        )

    def current_lambda(self) -> float:
        """The penalty weight lambda at the current step (warm-up, ramp, then ``strength``).

        Returns:
            lambda.
        """
        if self.step < self.warmup_steps:
            return self.warmup_strength
        done = min(1.0, (self.step - self.warmup_steps + 1) / self.ramp_steps)
        return self.warmup_strength + done * (self.strength - self.warmup_strength)

    def _objective(self, est, present, g_counts):
        have = present.float()
        k = have.sum().clamp(min=1.0)
        mean = (est * have).sum() / k
        dev = (est - mean) * have
        lam = self.current_lambda()
        value = mean + lam * (dev**2).sum() / k
        coef = (1.0 + 2.0 * lam * dev) / k * have
        return coef, value
