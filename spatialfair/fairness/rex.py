"""V-REx: the mean group loss plus a penalty on the spread of the group losses."""

from __future__ import annotations

from .base import Strategy
from .registry import register


@register
class VarianceREx(Strategy):
    """V-REx: ``mean_r L_r + lambda * (1/K) sum_r (L_r - mean L)^2`` over regions with a loss.

    lambda is ``warmup_strength`` for ``warmup_steps`` (default: one epoch or 10 % of the
    steps, whichever is longer), then ramps linearly to ``strength`` over ``ramp_steps``
    (default: as long as the warm-up), so short runs get a real warm-up and no jump.
    """

    name = "variance"
    default_strength = 10.0

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        warmup_steps: int | None = None,
        ramp_steps: int | None = None,
        warmup_strength: float = 1.0,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        if warmup_steps is None:
            tenth = 0 if total_steps is None else round(0.1 * total_steps)
            warmup_steps = (
                500
                if total_steps is None and steps_per_epoch is None
                else max(1, int(steps_per_epoch or 0), tenth)
            )
        self.warmup_steps = int(warmup_steps)
        self.ramp_steps = max(1, int(self.warmup_steps if ramp_steps is None else ramp_steps))
        self.warmup_strength = float(warmup_strength)

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
        have = (self.seen | present).float()
        k = have.sum().clamp(min=1.0)
        mean = (est * have).sum() / k
        dev = (est - mean) * have
        lam = self.current_lambda()
        value = mean + lam * (dev**2).sum() / k
        coef = (1.0 + 2.0 * lam * dev) / k * have
        return coef, value
