"""Exponential moving average (EMA) of trained weights, for DreamBooth's full fine-tune.

A full UNet fine-tune at a few 1e-6 still jitters from step to step with batches of one or two
images; the average of the last ~1/(1-decay) steps' weights is smoother and often samples
better than the last step's. The average is kept in float32 beside the weights it follows (one
more copy of the UNet in memory) and is what the saved checkpoint holds when EMA is on.
"""

from __future__ import annotations

import torch

from ..errors import BoothError

_WARMUP = 10  # the effective decay starts near 0 and rises as (1 + n) / (10 + n), so early steps are not averaged away


class ExponentialMovingAverage:
    """``average = d * average + (1 - d) * weight`` after every optimiser step, with
    ``d = min(decay, (1 + n) / (10 + n))`` for the n-th update (starts from the untrained weights)."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float) -> None:
        self.params, self.decay, self.updates = params, decay, 0
        self.average = {name: p.detach().float().clone() for name, p in params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (_WARMUP + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        for name, param in self.params.items():
            self.average[name].lerp_(param.detach().float(), weight)
        self.updates += 1

    @torch.no_grad()
    def copy_to_weights(self) -> None:
        """Make the model's weights the average (done once, after training, before the result is saved)."""
        for name, param in self.params.items():
            param.copy_(self.average[name])

    def state_dict(self) -> dict:
        return {"updates": self.updates, "average": {k: v.to("cpu", copy=True) for k, v in self.average.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state.get("average", {})) != set(self.average):
            raise BoothError("The training state's EMA weights do not match the model being trained; "
                             "resume with the settings it was saved with, or start over.")
        self.updates = int(state["updates"])
        for name, value in state["average"].items():
            self.average[name].copy_(value)


def unet_average(params: dict[str, torch.nn.Parameter], use_ema: bool, decay: float) -> ExponentialMovingAverage | None:
    """The UNet's moving average if ``use_ema``; the text encoders, trained for a few first steps at
    most, are saved as they are. ``params`` are named as in resumable state (``unet.…``)."""
    if not use_ema:
        return None
    return ExponentialMovingAverage({k: p for k, p in params.items() if k.startswith("unet.")}, decay)
