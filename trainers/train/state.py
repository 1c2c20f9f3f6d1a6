"""Resumable training state: one file, written atomically, enough to continue bit for bit.

Everything random in a step (batch choice, noise, timesteps, dropout) is derived from the seed and
the step number (see loop.py), so the state only needs the step, the trainable weights, the
optimiser, schedule and grad-scaler states, the weights' moving average (if on) and the loss history. It is saved with ``torch.save``
and read with ``weights_only=True`` (plain tensors, numbers and strings only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import TrainConfig, config_to_dict, dump_config
from ..errors import BoothError
from ..files import save_torch
from .identity import check_same_inputs

STATE_FILE = "state.pt"
FORMAT = 1
# Settings that may change between an interrupted run and its continuation without changing its result.
FREE_TO_CHANGE = {"steps", "output", "output_dir", "cache_dir", "device", "save_every", "sample"}


def state_path(config: TrainConfig) -> Path:
    return Path(config.output_dir) / STATE_FILE


@dataclass
class TrainingState:
    """What changes while training and is needed to continue: weights, optimiser, schedule, scaler,
    EMA (an :class:`~trainers.train.ema.ExponentialMovingAverage` or None), losses."""

    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: Any
    scaler: Any
    ema: Any = None
    history: list[dict] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # fingerprints of the model and data (see identity.py)

    def save(self, config: TrainConfig, step: int, path: Path | None = None) -> Path:
        """Write the state to ``path`` (default: the run's own, ``<output_dir>/state.pt``)."""
        refuse_non_finite(self.params, step)
        state = {
            "format": FORMAT, "step": step, "config": dump_config(config), "losses": self.history,
            "params": {name: p.detach().to("cpu", copy=True) for name, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "ema": self.ema.state_dict() if self.ema is not None else {}, "inputs": self.inputs,
        }
        return save_torch(state, path or state_path(config))

    def resume(self, resume: bool | str | os.PathLike | None, config: TrainConfig, progress) -> int:
        """Load the state ``resume`` names (True: this run's own) and return its step; 0 if none."""
        if resume is False or resume is None:
            return 0
        file = state_path(config) if resume is True else Path(resume)
        if resume is True and not file.is_file():
            progress.on_message(f"no saved state at {file}; starting from step 0")
            return 0
        state = load_state(file)
        check_compatible(state, config, file)
        check_same_inputs(state.get("inputs"), self.inputs, file)
        restore(state, self.params, self.optimizer, self.schedule, self.scaler, self.ema)
        self.history[:] = state["losses"]
        progress.on_message(f"resumed from {file} at step {state['step']}")
        return int(state["step"])


def refuse_non_finite(params: dict[str, torch.Tensor], step: int) -> None:
    """Never write NaN/inf weights: they would load fine and silently produce black or noise images."""
    for name, param in params.items():
        if not torch.isfinite(param).all():
            raise BoothError(f"Training diverged by step {step}: weight {name} is NaN or infinite, so nothing was "
                             "saved. Lower learning_rate (e.g. by 10x) or set mixed_precision=no.")


def load_state(path: str | os.PathLike) -> dict:
    file = Path(path)
    if not file.is_file():
        raise BoothError(f"No training state to resume from at {file}. Run without resume, or point resume at "
                         "the state.pt of an earlier run.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BoothError(f"{file} could not be read as training state ({type(exc).__name__}); it may be damaged. "
                         "Delete it to start over.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise BoothError(f"{file} is not training state written by this version; delete it to start over.")
    return state


def check_compatible(state: dict, config: TrainConfig, file: str | os.PathLike) -> None:
    """Refuse to continue a run whose result-changing settings differ (it would silently be a different run)."""
    before = _flatten(yaml.safe_load(state["config"]))
    now = _flatten(config_to_dict(config))
    changed = sorted(k for k in set(before) | set(now)
                     if k.split(".")[0] not in FREE_TO_CHANGE and before.get(k) != now.get(k))
    if before.get("steps") != config.steps and config.lr_scheduler != "constant":
        changed.append("steps")  # a decaying schedule is stretched over the total, so it changes every step
    if changed:
        details = ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})" for k in changed[:5])
        raise BoothError(f"Cannot resume from {file}: settings changed since it was saved: {details}. "
                         "Restore them, or start a new run in another output_dir.")
    if state["step"] > config.steps:
        raise BoothError(f"Cannot resume from {file}: it is at step {state['step']}, beyond steps={config.steps}. "
                         "Raise steps to continue training.")


def restore(state: dict, params: dict[str, torch.nn.Parameter], optimizer, schedule, scaler, ema=None) -> None:
    missing = sorted(set(params) ^ set(state["params"]))
    if missing:
        raise BoothError(f"Training state does not match the model being trained (first difference: {missing[0]}).")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state["params"][name])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    if ema is not None:
        ema.load_state_dict(state.get("ema") or {})


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat
