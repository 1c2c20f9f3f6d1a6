"""LoRA adapters on the UNet and text encoders, injected with peft for training.

The adapters live inside the diffusers/transformers modules themselves (no wrapper model), so the
training loop calls the UNet and text encoders exactly as it would without LoRA. Initialisation
is drawn from a seeded generator rather than the global RNG, so the same seed gives the same
starting point on any device and with any peft version.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from ..checkpoint.components import SDComponents
from ..errors import BoothError
from .names import Part, parts

ADAPTER = "booth"

# What each target set adapts, as module-path patterns (matched at the end of the path).
UNET_TARGETS: dict[str, str] = {
    "attention": r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)",
    "feed_forward": r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)",
    "projections": r"attentions\.\d+\.(proj_in|proj_out)",
    "conv": r"(resnets\.\d+\.(conv1|conv2|conv_shortcut)|(downsamplers|upsamplers)\.0\.conv)",
}
TEXT_TARGET = r"encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"


@dataclass
class LoraSettings:
    """Shape of the LoRA network. ``alpha / rank`` scales every update (kohya's convention)."""

    rank: int = 16
    alpha: float = 16.0
    unet_targets: tuple[str, ...] = ("attention",)
    text_encoder: bool = False
    dropout: float = 0.0

    def check(self) -> None:
        """Refuse settings that cannot describe a LoRA; the message names the setting."""
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise BoothError(f"LoRA rank must be a whole number of at least 1, not {self.rank!r}.")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0 \
                or not math.isfinite(self.alpha):
            raise BoothError(f"LoRA alpha must be a number above 0 (commonly equal to rank), not {self.alpha!r}.")
        if isinstance(self.unet_targets, str):
            raise BoothError(f"LoRA unet_targets must be a list of names, not the single string "
                             f"{self.unet_targets!r}; write [{self.unet_targets!r}].")
        unknown = [name for name in self.unet_targets if name not in UNET_TARGETS]
        if unknown:
            raise BoothError(f"LoRA unet_targets has unknown name {unknown[0]!r}; choose from "
                             f"{', '.join(UNET_TARGETS)}.")
        if not self.unet_targets and not self.text_encoder:
            raise BoothError("LoRA has nothing to train: unet_targets is empty and text_encoder is off. "
                             "Set unet_targets (e.g. [\"attention\"]) or turn on text_encoder.")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= self.dropout < 1.0:
            raise BoothError(f"LoRA dropout must be at least 0 and below 1, not {self.dropout!r}.")

    @property
    def uses_conv(self) -> bool:
        return "conv" in self.unet_targets


def _ends_with(pattern: str):
    compiled = re.compile(rf"(^|\.){pattern}$")
    return lambda path: compiled.search(path) is not None


def _target_paths(part: Part, settings: LoraSettings) -> list[str]:
    """Paths (relative to ``part.model``, where peft injects) of the layers this part adapts."""
    if part.is_text:
        if not settings.text_encoder:
            return []
        wanted = [_ends_with(TEXT_TARGET)]
    else:
        wanted = [_ends_with(UNET_TARGETS[name]) for name in dict.fromkeys(settings.unet_targets)]
    return [path for path, module in part.model.named_modules()
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and any(match(path) for match in wanted)]


def _largest_rank(layer: torch.nn.Module) -> int:
    """The rank of the layer's weight seen as a matrix [out, in * kernel]: a LoRA cannot exceed it."""
    weight = layer.weight
    return min(weight.shape[0], weight[0].numel())


def _check_rank(targets: list[tuple[Part, list[str]]], rank: int) -> None:
    layers = [(path, part.model.get_submodule(path)) for part, paths in targets for path in paths]
    path, layer = min(layers, key=lambda item: _largest_rank(item[1]))
    if rank > _largest_rank(layer):
        raise BoothError(f"LoRA rank {rank} is larger than the smallest targeted layer can use ({path}: "
                         f"{tuple(layer.weight.shape)} allows at most {_largest_rank(layer)}). "
                         f"Lower rank to {_largest_rank(layer)} or less.")


def adapter_layers(root: torch.nn.Module) -> list[tuple[str, LoraLayer]]:
    """(path below ``root``, peft layer) for every layer carrying Booth's adapter, in module order."""
    return [(path, module) for path, module in root.named_modules()
            if isinstance(module, LoraLayer) and ADAPTER in module.lora_A]


def has_lora(components: SDComponents) -> bool:
    return any(adapter_layers(part.model) for part in parts(components))


def _init_adapters(layers: list[LoraLayer], seed: int) -> list[torch.nn.Parameter]:
    """float32 adapters with down ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (what Kaiming-uniform with
    a=sqrt(5) gives) and up = 0, so the adapted model starts exactly at the base model."""
    generator = torch.Generator().manual_seed(seed)
    params: list[torch.nn.Parameter] = []
    with torch.no_grad():
        for layer in layers:
            layer.lora_A[ADAPTER].float()
            layer.lora_B[ADAPTER].float()
            down, up = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            bound = 1.0 / math.sqrt(down[0].numel())
            values = torch.rand(down.shape, generator=generator, dtype=torch.float32) * (2 * bound) - bound
            down.copy_(values.to(device=down.device, dtype=down.dtype))
            up.zero_()
            for param in (down, up):
                param.requires_grad_(True)
                params.append(param)
    return params


def add_lora(components: SDComponents, settings: LoraSettings, seed: int = 0) -> list[torch.nn.Parameter]:
    """Inject Booth's LoRA adapter into the UNet (and text encoders), freeze everything else and
    return the trainable LoRA parameters (down then up per layer, UNet first).

    Adapter weights are float32 even on a half-precision model, so small optimizer updates do not
    vanish; peft casts activations to them and back. They sit on each base layer's device.
    """
    settings.check()
    if has_lora(components):
        raise BoothError("The model already carries a LoRA adapter; merge it (merge_lora) or remove it "
                         "(remove_lora) before adding another.")
    targets = [(part, _target_paths(part, settings)) for part in parts(components)]
    targets = [(part, paths) for part, paths in targets if paths]
    if not targets:
        raise BoothError(f"LoRA unet_targets {list(settings.unet_targets)} match no layer of this "
                         f"{components.family} model; choose other targets.")
    _check_rank(targets, settings.rank)
    for module in (components.unet, components.vae, *components.text_encoders):
        module.requires_grad_(False)
    for part, paths in targets:
        config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=float(settings.dropout),
                            target_modules=paths, bias="none")
        inject_adapter_in_model(config, part.model, adapter_name=ADAPTER)
        part.model.requires_grad_(False)  # peft may leave other parameters trainable; only ours train
    layers = [layer for part, _ in targets for _, layer in adapter_layers(part.model)]
    return _init_adapters(layers, seed)


def lora_parameters(components: SDComponents) -> list[torch.nn.Parameter]:
    """The injected adapter's parameters in the order :func:`add_lora` returned them."""
    return [param for part in parts(components) for _, layer in adapter_layers(part.model)
            for param in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight)]


def _unload(components: SDComponents, merge: bool) -> None:
    for part in parts(components):
        for path, layer in adapter_layers(part.model):
            if merge:
                layer.merge(adapter_names=[ADAPTER])
            parent, _, child = path.rpartition(".")
            setattr(part.model.get_submodule(parent), child, layer.get_base_layer())
        if hasattr(part.model, "peft_config"):
            del part.model.peft_config
        part.model.requires_grad_(False)


def merge_lora(components: SDComponents) -> None:
    """Bake the adapter into the base weights and drop it (e.g. before saving a full checkpoint)."""
    _unload(components, merge=True)


def remove_lora(components: SDComponents) -> None:
    """Drop the adapter, leaving the base weights exactly as they were."""
    _unload(components, merge=False)
