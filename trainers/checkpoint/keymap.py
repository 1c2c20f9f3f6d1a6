"""Key maps between the original (LDM/CompVis) single-file layout and diffusers/transformers modules.

Maps are derived from the module's own state-dict keys plus the block structure in its config, so
one set of rules serves SD1.x, SD2.x, SDXL and the tiny test variants. Only the text encoders in
OpenCLIP layout need tensor changes (fused q/k/v, transposed projection); the VAE's attention needs
a 1x1-conv <-> linear reshape. Everything else is a rename, which keeps round trips bit-exact.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

import torch

from ..errors import BoothError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

_UNET_RESNET_PARTS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                      "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET_PARTS = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPENCLIP_LAYER_PARTS = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                         "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def _rename_part(rest: str, parts: dict[str, str]) -> str:
    for new, old in parts.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def _per_level(value: object, levels: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


def unet_block_prefixes(config: dict) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, LDM prefix, is_resnet) for every block of a UNet2DConditionModel config."""
    levels = len(config["block_out_channels"])
    per_block = _per_level(config.get("layers_per_block", 2), levels)
    pairs: list[tuple[str, str, bool]] = [("conv_in.", "input_blocks.0.0.", False)]
    block = 1
    for level in range(levels):
        for layer in range(per_block[level]):
            pairs.append((f"down_blocks.{level}.resnets.{layer}.", f"input_blocks.{block}.0.", True))
            pairs.append((f"down_blocks.{level}.attentions.{layer}.", f"input_blocks.{block}.1.", False))
            block += 1
        if level < levels - 1:
            pairs.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{block}.0.op.", False))
            block += 1
    pairs += [("mid_block.resnets.0.", "middle_block.0.", True), ("mid_block.attentions.0.", "middle_block.1.", False),
              ("mid_block.resnets.1.", "middle_block.2.", True)]
    up_per_block = list(reversed(per_block))
    up_types = config["up_block_types"]
    block = 0
    for level in range(levels):
        has_attention = "CrossAttn" in up_types[level]
        for layer in range(up_per_block[level] + 1):
            pairs.append((f"up_blocks.{level}.resnets.{layer}.", f"output_blocks.{block}.0.", True))
            pairs.append((f"up_blocks.{level}.attentions.{layer}.", f"output_blocks.{block}.1.", False))
            if layer == up_per_block[level] and level < levels - 1:
                slot = 2 if has_attention else 1
                pairs.append((f"up_blocks.{level}.upsamplers.0.conv.", f"output_blocks.{block}.{slot}.conv.", False))
            block += 1
    pairs += [("time_embedding.linear_1.", "time_embed.0.", False), ("time_embedding.linear_2.", "time_embed.2.", False),
              ("add_embedding.linear_1.", "label_emb.0.0.", False), ("add_embedding.linear_2.", "label_emb.0.2.", False),
              ("conv_norm_out.", "out.0.", False), ("conv_out.", "out.2.", False)]
    return pairs


def unet_key_map(config: dict, diffusers_keys: Iterable[str]) -> dict[str, str]:
    """Map each diffusers UNet key to its LDM key (without the ``model.diffusion_model.`` prefix)."""
    prefixes = unet_block_prefixes(config)
    mapping = {}
    for key in diffusers_keys:
        for new, old, is_resnet in prefixes:
            if key.startswith(new):
                rest = key[len(new):]
                mapping[key] = old + (_rename_part(rest, _UNET_RESNET_PARTS) if is_resnet else rest)
                break
        else:
            raise BoothError(f"Internal key map has no rule for UNet key {key!r}.")
    return mapping


def vae_key_map(config: dict, diffusers_keys: Iterable[str]) -> dict[str, str]:
    """Map each diffusers AutoencoderKL key to its LDM key (without the ``first_stage_model.`` prefix)."""
    levels = len(config["block_out_channels"])
    pairs: list[tuple[str, str, dict[str, str]]] = []
    for side in ("encoder", "decoder"):
        pairs += [(f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.", _VAE_RESNET_PARTS),
                  (f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.", _VAE_RESNET_PARTS),
                  (f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", _VAE_ATTENTION_PARTS),
                  (f"{side}.conv_norm_out.", f"{side}.norm_out.", {})]
    for level in range(levels):
        pairs += [(f"encoder.down_blocks.{level}.resnets.", f"encoder.down.{level}.block.", _VAE_RESNET_PARTS),
                  (f"encoder.down_blocks.{level}.downsamplers.0.", f"encoder.down.{level}.downsample.", {})]
        ldm_level = levels - 1 - level
        pairs += [(f"decoder.up_blocks.{level}.resnets.", f"decoder.up.{ldm_level}.block.", _VAE_RESNET_PARTS),
                  (f"decoder.up_blocks.{level}.upsamplers.0.", f"decoder.up.{ldm_level}.upsample.", {})]
    mapping = {}
    for key in diffusers_keys:
        for new, old, parts in pairs:
            if key.startswith(new):
                rest = key[len(new):]
                if old.endswith(".block."):  # keep the resnet index, rename inside it
                    index, _, inner = rest.partition(".")
                    mapping[key] = f"{old}{index}.{_rename_part(inner, parts)}"
                else:
                    mapping[key] = old + _rename_part(rest, parts)
                break
        else:
            mapping[key] = key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names
    return mapping


def is_vae_attention_matrix(ldm_key: str) -> bool:
    """LDM stores the VAE's attention projections as 1x1 convs; diffusers as linears."""
    return bool(re.search(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$", ldm_key))


# ---- text encoders -------------------------------------------------------------------------

def hf_clip_key_map(module_keys: Iterable[str]) -> dict[str, str]:
    """transformers CLIP keys -> original-layout keys below ``...transformer.`` (always with ``text_model.``)."""
    mapping = {}
    for key in module_keys:
        if key.startswith("text_projection."):
            continue  # SDXL's CLIP-L has none; projections are handled by the OpenCLIP map
        mapping[key] = key if key.startswith("text_model.") else "text_model." + key
    return mapping


def openclip_to_hf(ldm: dict[str, torch.Tensor], prefix: str, layers: int) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Convert OpenCLIP text-tower tensors under ``prefix`` into transformers CLIP names.

    Returns the converted tensors (without any ``text_model.`` level; ``text_projection.weight``
    included when present) and the set of original keys consumed.
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        used.add(prefix + name)
        return ldm[prefix + name]

    out["embeddings.token_embedding.weight"] = take("token_embedding.weight")
    out["embeddings.position_embedding.weight"] = take("positional_embedding")
    for suffix in ("weight", "bias"):
        out[f"final_layer_norm.{suffix}"] = take(f"ln_final.{suffix}")
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for new, old in _OPENCLIP_LAYER_PARTS.items():
            for suffix in ("weight", "bias"):
                out[f"{dst}{new}.{suffix}"] = take(f"{src}{old}.{suffix}")
        for suffix in ("weight", "bias"):
            q, k, v = take(f"{src}attn.in_proj_{suffix}").chunk(3, dim=0)
            out[f"{dst}self_attn.q_proj.{suffix}"] = q
            out[f"{dst}self_attn.k_proj.{suffix}"] = k
            out[f"{dst}self_attn.v_proj.{suffix}"] = v
    if prefix + "text_projection" in ldm:
        out["text_projection.weight"] = take("text_projection").t()
    return out, used


def hf_to_openclip(hf: dict[str, torch.Tensor], prefix: str, layers: int) -> dict[str, torch.Tensor]:
    """Inverse of :func:`openclip_to_hf`: transformers CLIP tensors -> OpenCLIP names under ``prefix``."""
    plain = {k.removeprefix("text_model."): v for k, v in hf.items()}
    out = {prefix + "token_embedding.weight": plain["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": plain["embeddings.position_embedding.weight"]}
    for suffix in ("weight", "bias"):
        out[f"{prefix}ln_final.{suffix}"] = plain[f"final_layer_norm.{suffix}"]
    for i in range(layers):
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for new, old in _OPENCLIP_LAYER_PARTS.items():
            for suffix in ("weight", "bias"):
                out[f"{dst}{old}.{suffix}"] = plain[f"{src}{new}.{suffix}"]
        for suffix in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{suffix}"] = torch.cat(
                [plain[f"{src}self_attn.{p}_proj.{suffix}"] for p in ("q", "k", "v")], dim=0)
    if "text_projection.weight" in plain:
        out[prefix + "text_projection"] = plain["text_projection.weight"].t()
    return out


def rename_all(tensors: dict[str, torch.Tensor], mapping: dict[str, str], prefix: str,
               transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Apply ``mapping`` (module key -> original key below ``prefix``) to ``tensors``."""
    out = {}
    for key, value in tensors.items():
        ldm_key = prefix + mapping[key]
        out[ldm_key] = transform(ldm_key, value) if transform else value
    return out
