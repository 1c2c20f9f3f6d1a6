"""How a training run reports to whoever started it, and how they ask it to stop.

The loop only ever talks to a :class:`Progress`: the CLI prints lines, a ComfyUI node forwards steps
to its progress bar and the interrupt button, tests record every event. Subclasses override only
what they need; every method has a do-nothing default.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import torch


class Progress:
    """The callback protocol. ``images`` are BHWC float tensors in [0, 1]."""

    def on_start(self, total_steps: int) -> None:
        pass

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        pass

    def on_sample(self, step: int, images: torch.Tensor) -> None:
        pass

    def on_message(self, text: str) -> None:
        pass

    def should_stop(self) -> bool:
        """Polled once per step; True ends the run cleanly (state and weights are saved)."""
        return False


class ConsoleProgress(Progress):
    """One line every ``every`` steps: step, loss (mean since the last line), learning rate, speed, ETA."""

    def __init__(self, every: int = 10, stream: TextIO | None = None) -> None:
        self.every = max(1, every)
        self.stream = stream or sys.stdout
        self._window: list[float] = []
        self._started = 0.0
        self._first_step: int | None = None

    def on_start(self, total_steps: int) -> None:
        self._started = time.perf_counter()
        self._first_step = None

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        if self._first_step is None:  # a resumed run starts counting from where it resumed
            self._first_step = step - 1
        self._window.append(loss)
        if step % self.every and step != total:
            return
        elapsed = time.perf_counter() - self._started
        per_step = elapsed / max(1, step - self._first_step)
        mean = sum(self._window) / len(self._window)
        self._window.clear()
        self._print(f"step {step}/{total}  loss {mean:.4f}  lr {lr:.2e}  {per_step:.2f} s/step  "
                    f"ETA {format_duration(per_step * (total - step))}")

    def on_sample(self, step: int, images: torch.Tensor) -> None:
        self._print(f"step {step}: {images.shape[0]} sample image(s)")

    def on_message(self, text: str) -> None:
        self._print(text)

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class RecordingProgress(Progress):
    """Keeps every event; ``stop_after`` asks the run to stop once that many steps are done (tests)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.total_steps: int | None = None
        self.steps: list[tuple[int, int, float, float]] = []
        self.samples: list[tuple[int, torch.Tensor]] = []
        self.messages: list[str] = []

    def on_start(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        self.steps.append((step, total, loss, lr))

    def on_sample(self, step: int, images: torch.Tensor) -> None:
        self.samples.append((step, images))

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after


def format_duration(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
