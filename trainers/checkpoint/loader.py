"""Original-layout single-file checkpoints (path or in-memory state dict) -> :class:`SDComponents`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import BoothError
from ..files import load_tensors
from . import keymap
from .components import SDComponents
from .families import Detected, TextEncoderSpec, detect, guess_sd2_prediction_type
from .modules import make_scheduler, make_text_encoder, make_unet, make_vae, state_keys
from .tokenizers import clip_tokenizer

PREDICTION_TYPES = ("auto", "epsilon", "v_prediction")


def ema_key(ldm_unet_key: str) -> str:
    """Where the original training code stored the EMA copy of a UNet weight (dots removed)."""
    return "model_ema." + ldm_unet_key.removeprefix("model.").replace(".", "")


def _assign(module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str, name: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise BoothError(f"{name} is incomplete: {len(missing)} {what} weights are missing (first: {missing[0]}). "
                         "The file may be truncated or from an unsupported variant.")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise BoothError(f"{name}: {what} weight {key} has shape {tuple(value.shape)}, expected "
                             f"{tuple(expected[key].shape)}. The file is from an unsupported variant.")
        if expected[key].is_floating_point() and not value.is_floating_point():
            raise BoothError(f"{name} is damaged: {what} weight {key} is stored as "
                             f"{str(value.dtype).removeprefix('torch.')}, not as floating-point numbers. "
                             "Re-download or re-export it.")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise BoothError(f"{name} is broken: {what} weight {key} holds NaN or infinite values, so everything "
                             "it draws or trains would be black or noise. Re-download it or choose another model.")
    module.load_state_dict(tensors, strict=True, assign=True)


def _load_unet(sd, detected: Detected, name: str, use_ema: bool, used: set[str]):
    unet = make_unet(detected.config["unet"], empty=True)
    mapping = keymap.unet_key_map(detected.config["unet"], state_keys(unet))
    tensors = {}
    for key, ldm in mapping.items():
        source = keymap.UNET_PREFIX + ldm
        if use_ema:
            if ema_key(source) not in sd:
                raise BoothError(f"{name} has no EMA weights (looked for {ema_key(source)}). Turn off use_ema.")
            source = ema_key(source)
        if source in sd:
            tensors[key] = sd[source]
            used.add(keymap.UNET_PREFIX + ldm)
    _assign(unet, tensors, "UNet", name)
    return unet


def _load_vae(sd, detected: Detected, name: str, used: set[str]):
    vae = make_vae(detected.config["vae"], empty=True)
    shapes = vae.state_dict()
    tensors = {}
    for key, ldm in keymap.vae_key_map(detected.config["vae"], shapes).items():
        source = keymap.VAE_PREFIX + ldm
        if source in sd:
            value = sd[source]
            tensors[key] = value.reshape(shapes[key].shape) if keymap.is_vae_attention_matrix(ldm) else value
            used.add(source)
    _assign(vae, tensors, "VAE", name)
    return vae


def _load_text_encoder(sd, spec: TextEncoderSpec, config: dict, name: str, used: set[str]):
    encoder = make_text_encoder(config, spec.with_projection, empty=True)
    module_keys = state_keys(encoder)
    if spec.layout == "hf":
        tensors = {}
        for key, ldm in keymap.hf_clip_key_map(module_keys).items():
            if spec.prefix + ldm in sd:
                tensors[key] = sd[spec.prefix + ldm]
                used.add(spec.prefix + ldm)
    else:
        present = {k for k in [spec.prefix + "token_embedding.weight"] if k in sd}
        if not present:
            raise BoothError(f"{name} is incomplete: the text encoder under {spec.prefix} is missing.")
        try:
            converted, consumed = keymap.openclip_to_hf(sd, spec.prefix, config["num_hidden_layers"])
        except KeyError as missing:
            raise BoothError(f"{name} is incomplete: text encoder weight {missing} is missing.") from None
        used |= consumed if spec.with_projection else consumed - {spec.prefix + "text_projection"}
        with_level = {k.removeprefix("text_model."): k for k in module_keys}
        tensors = {with_level[k]: v for k, v in converted.items() if k in with_level}
    _assign(encoder, tensors, "text encoder", name)
    return encoder


def load_components(source: str | os.PathLike | dict[str, torch.Tensor], *, prediction_type: str = "auto",
                    dtype: torch.dtype | None = None, use_ema: bool = False, tokenizer_dir: str | None = None,
                    metadata: dict[str, str] | None = None, name: str | None = None) -> SDComponents:
    """Load a single-file checkpoint (file path, or an LDM-layout state dict already in memory).

    ``prediction_type='auto'`` takes what the file reveals; SD 2.x files reveal nothing reliable,
    so the ComfyUI-compatible weight heuristic decides unless the caller sets it. ``dtype=None``
    keeps the file's dtype. No network access happens here or below.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise BoothError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, not {prediction_type!r}.")
    if isinstance(source, dict):
        sd, meta, label = source, dict(metadata or {}), name or "The model"
    else:
        sd, meta = load_tensors(source)
        label = name or str(Path(source))
    detected = detect(sd, label, meta)
    if prediction_type == "auto":
        prediction_type = detected.prediction_type or guess_sd2_prediction_type(sd)
    used: set[str] = set()
    unet = _load_unet(sd, detected, label, use_ema, used)
    vae = _load_vae(sd, detected, label, used)
    encoders = [_load_text_encoder(sd, spec, cfg, label, used)
                for spec, cfg in zip(detected.spec.text_encoders, detected.config["text_encoders"])]
    tokenizers = [clip_tokenizer(spec.pad_token, tokenizer_dir) for spec in detected.spec.text_encoders]
    extra = {k: v for k, v in sd.items() if k not in used and not k.startswith("model_ema.")}
    components = SDComponents(detected.family, prediction_type, unet, vae, encoders, tokenizers,
                              make_scheduler(detected.config["scheduler"], prediction_type), extra, meta)
    for module in (unet, vae, *encoders):
        module.requires_grad_(False).eval()
        target = dtype or _first_float_dtype(module)  # one dtype per module, even from mixed files
        if any(p.dtype != target for p in module.parameters()):
            module.to(target)
    return components


def _first_float_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(p.dtype for p in module.parameters() if p.is_floating_point())
