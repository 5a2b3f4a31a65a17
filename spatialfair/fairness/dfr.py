"""DFR (``lastlayer``): the final classifier layer retrained on region-balanced data."""

from __future__ import annotations

from torch import nn

from ..errors import InputError
from ..models import unwrap
from .base import phase_epochs
from .erm import ERM
from .registry import register
from .reweighting import region_balanced_weights


@register
class LastLayer(ERM):
    """DFR: ERM, then only the final classifier layer retrained on region-balanced tiles."""

    name = "lastlayer"
    uses_regions = True

    def __init__(
        self,
        num_regions,
        strength=None,
        *,
        head_epochs: int | None = None,
        epochs: int | None = None,
        **kw,
    ):
        super().__init__(num_regions, strength, **kw)
        if strength is not None:
            raise InputError(
                "config: strategies.lastlayer.strength",
                "lastlayer has no strength knob",
                "remove strength; set head_epochs instead",
            )
        self.head_epochs = phase_epochs("lastlayer.head_epochs", head_epochs, epochs, 4)

    def phases(self, epochs):
        """A ``train`` phase of ``epochs``, then ``head`` (last layer only) for ``head_epochs``."""
        return [("train", int(epochs)), ("head", self.head_epochs)]

    def trainable_parameters(self, kind, model):
        """The final layer alone in the ``head`` phase; everything otherwise."""
        if kind != "head":
            return list(model.parameters())
        return freeze_all_but_final_layer(model)

    def frozen_body(self, kind):
        """The ``head`` phase runs the frozen body in evaluation mode."""
        return kind == "head"

    def sampler_weights(self, kind, tiles):
        """Region-balanced tiles (power 1) in the ``head`` phase; shuffling otherwise."""
        return region_balanced_weights(tiles, 1.0) if kind == "head" else None

    def on_phase_start(self, kind, session):
        """Before ``head``: start from the kept ERM model; selection restarts."""
        if kind == "head":
            session.restore_best()
            session.reset_selection()


def final_layer(model: nn.Module) -> nn.Module:
    """The network's final classifier layer.

    Args:
        model: The network.

    Returns:
        ``model.head`` (the built-in U-Net), else the last ``Conv2d`` in module order (an smp
        model's segmentation head).

    Raises:
        ValueError: If the network has no ``Conv2d`` layer.
    """
    model = unwrap(model)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        return head
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer to retrain")
    return convs[-1]


def freeze_all_but_final_layer(model: nn.Module) -> list[nn.Parameter]:
    """Set ``requires_grad`` False everywhere except the final layer.

    Args:
        model: The network.

    Returns:
        The final layer's parameters (what the optimiser updates).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(final_layer(model).parameters())
    for p in params:
        p.requires_grad_(True)
    return params
