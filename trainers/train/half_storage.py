"""Frozen half-precision weights computed in float32 without ever being stored in float32.

On the CPU training computes in float32, but an fp16 checkpoint's frozen weights hold nothing that
float32 storage would add. Casting each layer's weight as it runs keeps the memory of the half
weights and gives exactly the float32 results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_HALF_DTYPES = (torch.float16, torch.bfloat16)


class FloatScratch:
    """One reusable float32 buffer that each frozen weight is upcast into as its layer runs.

    A fresh float32 copy per layer per pass costs more than the conversion: the allocator hands each
    large copy back to the kernel when it is freed, so the next one page-faults in zeroed memory and
    unmaps it again (measured: 2.6 GB/s for ``weight.float()`` against 12 GB/s copying into a kept
    buffer). Layers run one at a time, so one buffer the size of the largest weight serves them all;
    it belongs to the model it serves and goes when that model goes.
    """

    def __init__(self) -> None:
        self.buffer = torch.empty(0)

    def upcast(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        count = weight.numel()
        # A buffer made under inference mode (class images, previews, ComfyUI's executor) cannot be
        # written outside it, where training runs: replace it there.
        stale = self.buffer.is_inference() and not torch.is_inference_mode_enabled()
        if stale or self.buffer.numel() < count or self.buffer.dtype != dtype or self.buffer.device != weight.device:
            self.buffer = torch.empty(count, dtype=dtype, device=weight.device)
        return self.buffer[:count].view(weight.shape).copy_(weight)


class _UpcastLinear(torch.autograd.Function):
    """``F.linear`` with a frozen half-precision weight computed in the input's float32. Only the half
    weight is kept for the backward pass (and upcast again there), so no float32 copy of any frozen
    weight outlives its layer."""

    @staticmethod
    def forward(ctx, x, weight, bias, scratch):
        ctx.save_for_backward(weight)
        ctx.scratch = scratch
        return F.linear(x, scratch.upcast(weight, x.dtype), None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return grad.matmul(ctx.scratch.upcast(weight, grad.dtype)), None, None, None


class _UpcastConv2d(torch.autograd.Function):
    """``F.conv2d`` likewise; its backward needs only the weight (the input's gradient), so the input
    activation is not kept either, as autograd would for a trainable weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, scratch, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.scratch = scratch
        ctx.layout = (x.shape, stride, padding, dilation, groups)
        return F.conv2d(x, scratch.upcast(weight, x.dtype), None if bias is None else bias.to(x.dtype),
                        stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        shape, stride, padding, dilation, groups = ctx.layout
        grad_input = torch.nn.grad.conv2d_input(shape, ctx.scratch.upcast(weight, grad.dtype), grad, stride,
                                                padding, dilation, groups)
        return grad_input, None, None, None, None, None, None, None


def _linear(self, x):
    return _UpcastLinear.apply(x.float(), self.weight, self.bias, self.upcast_scratch)


def _conv2d(self, x):
    return _UpcastConv2d.apply(x.float(), self.weight, self.bias, self.upcast_scratch, self.stride, self.padding,
                               self.dilation, self.groups)


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
    if not params or any(p.dtype not in _HALF_DTYPES or p.requires_grad for p in params):
        return False
    covered, scratch = set(), FloatScratch()
    for layer in module.modules():
        for kind, forward in _UPCAST_FORWARDS:
            if type(layer) is kind:
                layer.forward = forward.__get__(layer)
                layer.upcast_scratch = scratch
                covered.update(id(p) for p in layer.parameters(recurse=False))
    for layer in module.modules():  # anything else holding weights is small: plain float32 it is
        for name, param in layer.named_parameters(recurse=False):
            if id(param) not in covered:
                param.data = param.data.float()
    return True
