"""Where and in what precision training runs, and how much memory it took.

Mixed precision only exists on CUDA: frozen weights are stored in fp16/bf16 (half the memory),
trainable ones stay float32 so small updates are not rounded away, and autocast runs the maths in
half precision. fp16 also needs a gradient scaler (its range is too small for raw gradients);
bf16 does not. On the CPU everything is float32, which is also what makes runs bit-reproducible.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import torch

from ..errors import BoothError

_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BoothError(f"device is {name!r} but this PyTorch sees no CUDA GPU; set device=cpu or device=auto.")
    return device


@dataclass
class Precision:
    """``frozen_dtype`` for weights that do not train; ``autocast()`` around forward passes."""

    device: torch.device
    mode: str  # "no" | "fp16" | "bf16" (what is really used)
    note: str = ""

    @property
    def frozen_dtype(self) -> torch.dtype:
        return _HALF.get(self.mode, torch.float32)

    def autocast(self):
        if self.mode == "no":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_HALF[self.mode])

    def make_scaler(self):
        return torch.amp.GradScaler("cuda") if self.mode == "fp16" else None


def choose_precision(requested: str, device: torch.device) -> Precision:
    if device.type != "cuda":
        note = "" if requested == "no" else f"mixed_precision={requested} needs a CUDA GPU; training in fp32 on {device}."
        return Precision(device, "no", note)
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        return Precision(device, "fp16", "this GPU has no bf16 support; using fp16 mixed precision instead.")
    return Precision(device, requested)


@contextlib.contextmanager
def on_device(modules: list[torch.nn.Module], device: torch.device):
    """Lend modules to ``device`` for a block and put each back where it was (VRAM is for the UNet)."""
    homes = [next(m.parameters()).device for m in modules]
    for module in modules:
        module.to(device)
    try:
        yield
    finally:
        for module, home in zip(modules, homes):
            module.to(home)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """GPU: the most memory tensors held since the reset. CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:  # Windows: psutil knows the peak working set
        try:
            import psutil
        except ImportError:
            return 0
        return int(getattr(psutil.Process().memory_info(), "peak_wset", 0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes
