"""Kohya module names for the layers of an :class:`SDComponents`, in both directions.

A kohya name is a prefix plus the module's path with dots turned into underscores. The UNet of
SD 1.x/2.x is named by its diffusers path, SDXL's by its original (LDM) path; readers such as
ComfyUI accept either style for every family, so the lookup index built here holds both.
Text-encoder names always carry a ``text_model_`` level, whichever transformers version built
the module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from ..checkpoint.components import SDComponents
from ..checkpoint.families import FAMILIES
from ..checkpoint.keymap import unet_key_map

UNET_PREFIX = "lora_unet_"
_LDM_NAMED_FAMILIES = {"sdxl"}  # kohya trains SDXL on the original UNet code, so its names follow it


@dataclass(frozen=True)
class Part:
    """One network a LoRA can touch: the UNet or one text encoder.

    ``model`` is where adapters are injected; ``root`` is what module paths are relative to (the
    CLIP transformer inside a text encoder, so paths never depend on a ``text_model.`` level).
    """

    model: torch.nn.Module
    root: torch.nn.Module
    prefix: str
    is_text: bool
    also_read_as: tuple[str, ...] = ()  # other prefixes readers accept for this part


def parts(components: SDComponents) -> list[Part]:
    """The UNet, then each text encoder with its kohya prefix (``lora_te_`` or ``lora_te1_``/``lora_te2_``).

    Like ComfyUI, ``lora_te_`` and ``lora_te1_`` are read as synonyms for the first (CLIP-L/-H) encoder.
    """
    single = len(FAMILIES[components.family].text_encoders) == 1
    found = [Part(components.unet, components.unet, UNET_PREFIX, False)]
    for index, encoder in enumerate(components.text_encoders, start=1):
        if single:
            prefix, aliases = "lora_te_", ("lora_te1_",)
        else:
            prefix, aliases = f"lora_te{index}_", ("lora_te_",) if index == 1 else ()
        found.append(Part(encoder, getattr(encoder, "text_model", encoder), prefix, True, aliases))
    return found


def underscored(path: str) -> str:
    return path.replace(".", "_")


def weight_layers(root: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Every Linear/Conv2d under ``root`` by path; a layer wrapped by peft is listed under its own path."""
    adapted = {path: module for path, module in root.named_modules() if isinstance(module, BaseTunerLayer)}
    layers = {path: module.get_base_layer() for path, module in adapted.items()}
    for path, module in root.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and not any(
                path.startswith(wrapper + ".") for wrapper in adapted):
            layers.setdefault(path, module)
    return layers


def _ldm_paths(unet: torch.nn.Module, paths: list[str]) -> dict[str, str]:
    mapping = unet_key_map(unet.config, [path + ".weight" for path in paths])
    return {path: mapping[path + ".weight"].removesuffix(".weight") for path in paths}


def saved_names(part: Part, family: str, paths: list[str]) -> dict[str, str]:
    """Module path -> the kohya name Booth writes for it (the style kohya itself uses for ``family``)."""
    if part.is_text:
        return {path: f"{part.prefix}text_model_{underscored(path)}" for path in paths}
    if family in _LDM_NAMED_FAMILIES:
        return {path: part.prefix + underscored(ldm) for path, ldm in _ldm_paths(part.root, paths).items()}
    return {path: part.prefix + underscored(path) for path in paths}


def name_index(components: SDComponents) -> dict[str, tuple[Part, torch.nn.Module]]:
    """Every kohya name that may address a layer of ``components`` -> (part, layer holding the weight)."""
    index: dict[str, tuple[Part, torch.nn.Module]] = {}
    for part in parts(components):
        layers = weight_layers(part.root)
        paths = list(layers)
        if part.is_text:
            names = [saved_names(replace(part, prefix=prefix), components.family, paths)
                     for prefix in (part.prefix, *part.also_read_as)]
        else:
            names = [{path: part.prefix + underscored(path) for path in paths},
                     {path: part.prefix + underscored(ldm) for path, ldm in _ldm_paths(part.root, paths).items()}]
        for mapping in names:
            for path, name in mapping.items():
                index[name] = (part, layers[path])
    return index
