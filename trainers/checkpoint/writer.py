""":class:`SDComponents` -> original-layout state dict / single-file ``.safetensors`` checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..files import save_tensors
from . import keymap
from .components import SDComponents
from .families import FAMILIES, architecture, modelspec_architecture, unet_variant

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def parse_dtype(name: str | None) -> torch.dtype | None:
    """'fp16' | 'bf16' | 'fp32' | None (keep) -> torch dtype; error names the accepted values."""
    from ..errors import BoothError

    if name in (None, "", "keep"):
        return None
    if name not in DTYPES:
        raise BoothError(f"dtype must be one of {', '.join(DTYPES)} (or keep), not {name!r}.")
    return DTYPES[name]


def _config_of(components: SDComponents) -> dict:
    variant = unet_variant(components.family, components.unet.config.block_out_channels)
    if variant is not None:
        return architecture(components.family, variant)
    return {"unet": dict(components.unet.config), "vae": dict(components.vae.config)}


def to_original_state_dict(components: SDComponents) -> dict[str, torch.Tensor]:
    """Every weight of the components under its original-layout key (plus the kept extra tensors)."""
    config = _config_of(components)
    unet_sd = components.unet.state_dict()
    out = keymap.rename_all(unet_sd, keymap.unet_key_map(config["unet"], unet_sd), keymap.UNET_PREFIX)
    vae_sd = components.vae.state_dict()
    out.update(keymap.rename_all(
        vae_sd, keymap.vae_key_map(config["vae"], vae_sd), keymap.VAE_PREFIX,
        lambda key, value: value.reshape(*value.shape, 1, 1) if keymap.is_vae_attention_matrix(key) else value))
    for spec, encoder in zip(FAMILIES[components.family].text_encoders, components.text_encoders):
        te_sd = {k: v for k, v in encoder.state_dict().items() if not k.endswith("position_ids")}
        if spec.layout == "hf":
            out.update(keymap.rename_all(te_sd, keymap.hf_clip_key_map(te_sd), spec.prefix))
        else:
            out.update(keymap.hf_to_openclip(te_sd, spec.prefix, encoder.config.num_hidden_layers))
    for key, value in components.extra_state.items():
        out.setdefault(key, value)
    return out


def save_checkpoint(components: SDComponents, path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write a single-file checkpoint atomically; ``dtype`` casts floating tensors (None keeps them)."""
    state = to_original_state_dict(components)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    meta = {"modelspec.architecture": modelspec_architecture(components.family, components.prediction_type),
            "modelspec.prediction_type": components.prediction_type, **(metadata or {})}
    return save_tensors(state, path, meta)
