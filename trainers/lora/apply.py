"""Baking a LoRA into a model's weights (for sampling with it, merging it, or training on top of it)."""

from __future__ import annotations

import torch

from ..checkpoint.components import SDComponents
from ..checkpoint.families import FAMILIES
from ..errors import BoothError
from .kohya import LoraModule, LoraWeights
from .names import name_index


def _core_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 1x1 convolution and a linear layer hold the same matrix; compare them as equals."""
    return tuple(shape[:2]) if tuple(shape[2:]) == (1, 1) else tuple(shape)


def _fits(module: LoraModule, layer: torch.nn.Module) -> bool:
    return _core_shape(module.weight_shape) == _core_shape(tuple(layer.weight.shape))


def _refuse(lora: LoraWeights, components: SDComponents, detail: str) -> BoothError:
    own = FAMILIES[components.family].label
    theirs = FAMILIES[lora.family].label if lora.family else "another model (its file does not say which)"
    return BoothError(f"{lora.name} does not fit this model: it is a LoRA for {theirs}, the model is {own}. "
                      f"{detail} Choose a LoRA trained for {own}.")


def apply_lora(components: SDComponents, lora: LoraWeights, strength: float = 1.0,
               text_strength: float | None = None) -> list[str]:
    """Add ``strength * alpha / rank * up @ down`` to each matching layer's weight, in place.

    ``text_strength`` (default: ``strength``) scales the text-encoder modules. Returns the LoRA's
    module names that address no layer of this model. A LoRA whose layer shapes disagree with the
    model, or that matches nothing at all, is refused before any weight changes.
    """
    text_scale = strength if text_strength is None else text_strength
    index = name_index(components)
    plan: list[tuple[LoraModule, torch.nn.Module, float]] = []
    unmatched: list[str] = []
    for name, module in lora.modules.items():
        target = index.get(name)
        if target is None:
            unmatched.append(name)
            continue
        part, layer = target
        if not _fits(module, layer):
            raise _refuse(lora, components, f"First mismatching module: {name} updates a weight of shape "
                          f"{module.weight_shape}, the model's layer has {tuple(layer.weight.shape)}.")
        plan.append((module, layer, text_scale if part.is_text else strength))
    if not plan and lora.modules:
        raise _refuse(lora, components, f"None of its {len(lora.modules)} modules names a layer of this model "
                      f"(first: {next(iter(lora.modules))}).")
    with torch.no_grad():
        for module, layer, scale in plan:
            weight = layer.weight
            delta = module.delta(weight.device).reshape(weight.shape)
            weight.copy_((weight.float() + (scale * module.scale) * delta).to(weight.dtype))
    return unmatched
