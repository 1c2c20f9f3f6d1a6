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
import torch.nn.functional as F

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


class _UpcastLinear(torch.autograd.Function):
    """``F.linear`` with a frozen half-precision weight computed in the input's float32. Only the half
    weight is kept for the backward pass (and upcast again there), so no float32 copy of any frozen
    weight outlives its layer."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return grad.matmul(weight.to(grad.dtype)), None, None


class _UpcastConv2d(torch.autograd.Function):
    """``F.conv2d`` likewise; its backward needs only the weight (the input's gradient), so the input
    activation is not kept either, as autograd would for a trainable weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.layout = (x.shape, stride, padding, dilation, groups)
        return F.conv2d(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype),
                        stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        shape, stride, padding, dilation, groups = ctx.layout
        grad_input = torch.nn.grad.conv2d_input(shape, weight.to(grad.dtype), grad, stride, padding, dilation, groups)
        return grad_input, None, None, None, None, None, None


def _linear(self, x):
    return _UpcastLinear.apply(x.float(), self.weight, self.bias)


def _conv2d(self, x):
    return _UpcastConv2d.apply(x.float(), self.weight, self.bias, self.stride, self.padding, self.dilation,
                               self.groups)


def _group_norm(self, x):
    return F.group_norm(x.float(), self.num_groups, _float(self.weight), _float(self.bias), self.eps)


def _layer_norm(self, x):
    return F.layer_norm(x.float(), self.normalized_shape, _float(self.weight), _float(self.bias), self.eps)


def _embedding(self, ids):
    return F.embedding(ids, self.weight.float(), self.padding_idx, self.max_norm, self.norm_type,
                       self.scale_grad_by_freq, self.sparse)


def _float(tensor):
    return None if tensor is None else tensor.float()


_UPCAST_FORWARDS = ((torch.nn.Linear, _linear), (torch.nn.Conv2d, _conv2d), (torch.nn.GroupNorm, _group_norm),
                    (torch.nn.LayerNorm, _layer_norm), (torch.nn.Embedding, _embedding))


def keep_half_storage(module: torch.nn.Module) -> bool:
    """Compute a frozen half-precision module in float32 without ever holding it in float32.

    On the CPU everything is computed in float32 (bit-reproducible, and half maths is slow there),
    but a checkpoint stored in fp16 holds nothing that float32 storage would add: the values are
    the same, so casting each layer's weight as it is used gives exactly the float32 results at
    half the memory (for SD1.5's UNet 1.7 GB instead of 3.4 GB). Applies to modules whose weights are
    all fp16/bf16 and frozen; returns whether it did. Outputs are float32; the module's ``dtype``
    still reads half, so code that casts inputs to it keeps working.
    """
    params = list(module.parameters())
    if not params or any(p.dtype not in _HALF.values() or p.requires_grad for p in params):
        return False
    covered = set()
    for layer in module.modules():
        for kind, forward in _UPCAST_FORWARDS:
            if type(layer) is kind:
                layer.forward = forward.__get__(layer)
                covered.update(id(p) for p in layer.parameters(recurse=False))
    for layer in module.modules():  # anything else holding weights is small: plain float32 it is
        for name, param in layer.named_parameters(recurse=False):
            if id(param) not in covered:
                param.data = param.data.float()
    return True
