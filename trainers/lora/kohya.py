"""The kohya ``.safetensors`` LoRA layout: writing Booth's adapters in it and reading it back.

This is the layout ComfyUI, A1111/Forge and kohya's own scripts all load, so a LoRA trained here
works everywhere without conversion. docs/formats.md describes the key and metadata rules.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer

from ..checkpoint.components import SDComponents
from ..checkpoint.families import FAMILIES, architecture, modelspec_architecture
from ..errors import BoothError
from ..files import load_tensors, save_tensors
from .names import parts, saved_names
from .network import ADAPTER, LoraSettings, adapter_layers

DOWN, UP, ALPHA, MID = "lora_down.weight", "lora_up.weight", "alpha", "lora_mid.weight"
_IMPLEMENTATION = {"sdxl": "https://github.com/Stability-AI/generative-models"}  # the rest: "diffusers"


@dataclass
class LoraModule:
    """One adapted layer: ``W += strength * alpha / rank * up @ [mid] @ down``.

    ``down`` is [rank, in] or [rank, in, kh, kw]; ``up`` is [out, rank] or [out, rank, 1, 1];
    ``mid`` (LyCORIS' Tucker form, [rank, rank, kh, kw]) is present only when ``down`` is 1x1.
    """

    down: torch.Tensor
    up: torch.Tensor
    alpha: float
    mid: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the weight this module updates ([out, in] or [out, in, kh, kw])."""
        kernel = (self.mid if self.mid is not None else self.down).shape[2:]
        return (int(self.up.shape[0]), int(self.down.shape[1]), *(int(k) for k in kernel))

    def delta(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``up @ [mid] @ down`` in float32, shaped like :attr:`weight_shape` (scale not applied)."""
        down = self.down.to(device, torch.float32).flatten(1)
        up = self.up.to(device, torch.float32).flatten(1)
        if self.mid is None:
            return (up @ down).reshape(self.weight_shape)
        mid = self.mid.to(device, torch.float32)
        return torch.einsum("oa,abyx,bi->oiyx", up, mid, down)


@dataclass
class LoraWeights:
    """A LoRA file's modules keyed by kohya module name, plus its metadata."""

    modules: dict[str, LoraModule]
    metadata: dict[str, str] = field(default_factory=dict)
    name: str = "The LoRA"

    @property
    def claimed_family(self) -> str | None:
        """The model family the LoRA's metadata names, if it names one."""
        version = self.metadata.get("ss_base_model_version", "")
        base_model = self.metadata.get("modelspec.architecture", "").split("/")[0]
        for family, spec in FAMILIES.items():
            if version == spec.kohya_base_version or base_model.startswith(spec.modelspec_architecture):
                return family
        return None

    @property
    def family(self) -> str | None:
        """The model family the LoRA was made for, from its metadata or, failing that, its names and widths."""
        if self.claimed_family is not None:
            return self.claimed_family
        if any(name.startswith(("lora_te1_", "lora_te2_")) for name in self.modules):
            return "sdxl"
        for name, module in self.modules.items():
            if name.endswith("attn2_to_k"):
                width = module.down.shape[1]
                return next((f for f in FAMILIES if architecture(f)["unet"]["cross_attention_dim"] == width), None)
        return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def saved_layers(components: SDComponents) -> dict[str, LoraLayer]:
    """Kohya module name -> adapted layer, for every layer :func:`save_lora` writes (UNet first, then
    each text encoder, in module order). The one place where saved names are chosen."""
    layers: dict[str, LoraLayer] = {}
    for part in parts(components):
        adapted = adapter_layers(part.root)
        names = saved_names(part, components.family, [path for path, _ in adapted])
        layers.update({names[path]: layer for path, layer in adapted})
    return layers


def lora_state_dict(components: SDComponents, settings: LoraSettings) -> dict[str, torch.Tensor]:
    """The injected adapter as kohya tensors (CPU copies, adapter dtype)."""
    state: dict[str, torch.Tensor] = {}
    for name, layer in saved_layers(components).items():
        if layer.r[ADAPTER] != settings.rank or layer.lora_alpha[ADAPTER] != settings.alpha:
            raise BoothError(f"LoRA settings (rank {settings.rank}, alpha {settings.alpha}) differ from the "
                             f"adapter on {name} (rank {layer.r[ADAPTER]}, alpha {layer.lora_alpha[ADAPTER]}); "
                             "save with the settings the adapter was added with.")
        state[f"{name}.{DOWN}"] = layer.lora_A[ADAPTER].weight.detach().to("cpu", copy=True)
        state[f"{name}.{UP}"] = layer.lora_B[ADAPTER].weight.detach().to("cpu", copy=True)
        state[f"{name}.{ALPHA}"] = torch.tensor(float(settings.alpha))
    if not state:
        raise BoothError("The model carries no LoRA adapter to save; add one with add_lora first.")
    return state


def kohya_metadata(family: str, settings: LoraSettings, title: str, prediction_type: str = "epsilon") -> dict[str, str]:
    """The metadata kohya's scripts write, so tools that show or sort LoRAs by it recognise ours."""
    spec = FAMILIES[family]
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(settings.rank),
        "ss_network_alpha": _number(settings.alpha),
        "ss_base_model_version": spec.kohya_base_version,
        "ss_v2": str(family == "sd2"),
        "ss_v_parameterization": str(prediction_type == "v_prediction"),
        "ss_training_comment": "",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{modelspec_architecture(family, prediction_type)}/lora",
        "modelspec.implementation": _IMPLEMENTATION.get(family, "diffusers"),
        "modelspec.title": title,
        "booth.lora_settings": json.dumps(asdict(settings)),
    }
    if settings.uses_conv:
        meta["ss_network_args"] = json.dumps({"conv_dim": str(settings.rank), "conv_alpha": _number(settings.alpha)})
    if settings.dropout:
        meta["ss_network_dropout"] = str(settings.dropout)
    return meta


def save_lora(components: SDComponents, settings: LoraSettings, path: str | os.PathLike, *,
              metadata: dict[str, str] | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Write the adapter as a kohya LoRA ``.safetensors`` atomically; ``metadata`` adds to (and may
    override) the kohya keys, e.g. ``ss_steps`` or ``ss_resolution``."""
    target = Path(path)
    if target.suffix.lower() != ".safetensors":
        raise BoothError(f"LoRA output {target} must end in .safetensors (the format ComfyUI and kohya load).")
    tensors = {key: value.to(dtype) for key, value in lora_state_dict(components, settings).items()}
    meta = {**kohya_metadata(components.family, settings, target.stem, components.prediction_type), **(metadata or {})}
    return save_tensors(tensors, target, meta)


def _module(name: str, tensors: dict[str, torch.Tensor], label: str) -> LoraModule:
    if DOWN not in tensors or UP not in tensors:
        raise BoothError(f"{label} is incomplete: module {name} lacks its "
                         f"{'lora_up' if DOWN in tensors else 'lora_down'} weight.")
    down, up, mid = tensors[DOWN], tensors[UP], tensors.get(MID)
    rank = down.shape[0] if down.ndim in (2, 4) else -1
    shapes_agree = (rank > 0 and up.ndim == down.ndim and up.shape[1] == rank
                    and (down.ndim == 2 or tuple(up.shape[2:]) == (1, 1))
                    and (mid is None or (mid.ndim == 4 and tuple(mid.shape[:2]) == (rank, rank)
                                         and tuple(down.shape[2:]) == (1, 1))))
    if not shapes_agree:
        mid_shape = "" if mid is None else f", mid {tuple(mid.shape)}"
        raise BoothError(f"{label}: module {name} has inconsistent shapes (down {tuple(down.shape)}, up "
                         f"{tuple(up.shape)}{mid_shape}). The file is damaged.")
    alpha = tensors.get(ALPHA)
    if alpha is not None and alpha.numel() != 1:
        raise BoothError(f"{label}: module {name} has an alpha with {alpha.numel()} values; expected one.")
    return LoraModule(down, up, float(alpha) if alpha is not None else float(rank), mid)


def read_lora(source: str | os.PathLike | dict[str, torch.Tensor], *,
              metadata: dict[str, str] | None = None) -> LoraWeights:
    """Parse a kohya-layout LoRA (file path or state dict). A missing alpha means alpha = rank."""
    if isinstance(source, dict):
        tensors, meta, label = source, dict(metadata or {}), "The LoRA"
    else:
        tensors, meta = load_tensors(source)
        label = str(source)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, suffix = key.partition(".")
        if suffix not in (DOWN, UP, ALPHA, MID):
            raise BoothError(f"{label} is not a LoRA in the kohya layout (key {key!r}). Booth reads LoRA/LoCon "
                             "files with lora_down/lora_up/alpha keys, as written by kohya's scripts and Booth.")
        grouped.setdefault(name, {})[suffix] = value
    if not grouped:
        raise BoothError(f"{label} holds no tensors; it is not a LoRA.")
    modules = {name: _module(name, grouped[name], label) for name in sorted(grouped)}
    return LoraWeights(modules, meta, label)
