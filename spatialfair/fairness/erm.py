"""ERM: the mean loss over every labelled pixel, the baseline of every verdict."""

from __future__ import annotations

import torch

from .base import Strategy, global_sum, world_size_of
from .registry import register


@register
class ERM(Strategy):
    """Plain mean loss over all valid pixels (also those outside every region)."""

    name = "erm"
    uses_regions = False

    def loss(
        self,
        pixel_loss,
        valid,
        regions=None,
        *,
        logits=None,
        target=None,
        tile_regions=None,
        reduce=None,
    ):
        """Mean loss over all valid pixels, averaged over ranks; ignores the regions."""
        valid = valid.bool()
        local = torch.where(valid, pixel_loss.float(), torch.zeros_like(pixel_loss.float())).sum()
        packed = global_sum(torch.stack([local, valid.sum().float()]), reduce)
        value = packed[0] / packed[1].clamp(min=1.0)
        self.step += 1
        self.last_value = value
        surrogate = world_size_of(reduce) * local / packed[1].clamp(min=1.0)
        return surrogate + (value - surrogate.detach())
