"""Model families Booth supports, and recognising them from a checkpoint's keys and shapes."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import BoothError
from .keymap import UNET_PREFIX

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class TextEncoderSpec:
    """Where one text encoder lives in the original layout and how it is stored there."""

    prefix: str
    layout: str  # "hf" (transformers CLIP names) or "openclip" (fused q/k/v resblocks)
    with_projection: bool
    pad_token: str


@dataclass(frozen=True)
class FamilySpec:
    name: str
    label: str
    text_encoders: tuple[TextEncoderSpec, ...]
    kohya_base_version: str  # value of kohya's ss_base_model_version
    modelspec_architecture: str


_CLIP_L = TextEncoderSpec("cond_stage_model.transformer.", "hf", False, "<|endoftext|>")
FAMILIES: dict[str, FamilySpec] = {
    "sd15": FamilySpec("sd15", "Stable Diffusion 1.x", (_CLIP_L,), "sd_v1", "stable-diffusion-v1"),
    "sd2": FamilySpec("sd2", "Stable Diffusion 2.x",
                      (TextEncoderSpec("cond_stage_model.model.", "openclip", False, "!"),),
                      "sd_v2", "stable-diffusion-v2"),
    "sdxl": FamilySpec("sdxl", "Stable Diffusion XL base",
                       (TextEncoderSpec("conditioner.embedders.0.transformer.", "hf", False, "<|endoftext|>"),
                        TextEncoderSpec("conditioner.embedders.1.model.", "openclip", True, "!")),
                       "sdxl_base_v1-0", "stable-diffusion-xl-v1-base"),
}
# "full" is the real architecture; "tiny" the few-MB random-weight test model; "toy" the pre-trained model
# of the toy world (trainers/toyworld), narrow enough to learn on a CPU. Each has a configs/ file.
VARIANTS = {"full": "full size", "tiny": "tiny test model", "toy": "toy-world model"}


def modelspec_architecture(family: str, prediction_type: str) -> str:
    """The modelspec name; SD 2.x is named by its variant (512 epsilon or 768 v-prediction)."""
    if family == "sd2":
        return "stable-diffusion-v2-768-v" if prediction_type == "v_prediction" else "stable-diffusion-v2-512"
    return FAMILIES[family].modelspec_architecture


@functools.lru_cache(maxsize=None)
def architecture(family: str, variant: str = "full") -> dict:
    """The architecture config (unet, vae, text_encoders, scheduler, resolution) kept as data in the repo."""
    if family not in FAMILIES:
        raise BoothError(f"Unknown model family {family!r}; choose one of {', '.join(FAMILIES)}.")
    if variant not in VARIANTS:
        raise BoothError(f"Unknown model variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    path = CONFIG_DIR / (f"{family}.json" if variant == "full" else f"{family}_{variant}.json")
    return json.loads(path.read_text()) if path.exists() else {}


def family_variants(family: str) -> list[str]:
    """The variants a family has a config for, full size first."""
    return [variant for variant in VARIANTS if architecture(family, variant)]


def unet_variant(family: str, block_out_channels: list[int]) -> str | None:
    """The variant whose UNet has these widths (the UNet alone tells the variants apart), else None."""
    return next((variant for variant in family_variants(family)
                 if architecture(family, variant)["unet"]["block_out_channels"] == list(block_out_channels)), None)


@dataclass(frozen=True)
class Detected:
    family: str
    variant: str
    prediction_type: str | None  # None when the weights cannot tell
    has_ema: bool

    @property
    def spec(self) -> FamilySpec:
        return FAMILIES[self.family]

    @property
    def config(self) -> dict:
        return architecture(self.family, self.variant)


def _has(keys: set[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _refuse_other_kinds(keys: set[str], name: str) -> None:
    """Give a precise message for the files people most often pick by mistake."""
    if any(".lora_down." in k or ".lora_A." in k or k.startswith(("lora_unet_", "lora_te")) for k in keys):
        raise BoothError(f"{name} is a LoRA, not a checkpoint. Choose a full model (e.g. from models/checkpoints) "
                         "as the base, and load LoRAs with a LoRA loader.")
    if _has(keys, "double_blocks.") or _has(keys, UNET_PREFIX + "double_blocks.") or _has(keys, "model.diffusion_model.double_blocks"):
        raise BoothError(f"{name} is a Flux model, which Booth does not train. Supported: SD 1.x, SD 2.x, SDXL base.")
    if _has(keys, "joint_blocks.") or _has(keys, UNET_PREFIX + "joint_blocks."):
        raise BoothError(f"{name} is a Stable Diffusion 3 model, which Booth does not train. "
                         "Supported: SD 1.x, SD 2.x, SDXL base.")
    if not _has(keys, UNET_PREFIX):
        if _has(keys, "encoder.conv_in.") and _has(keys, "decoder.conv_in."):
            raise BoothError(f"{name} is a VAE on its own, not a full checkpoint. Choose a full model file.")
        if _has(keys, "down_blocks.") and _has(keys, "conv_in."):
            raise BoothError(f"{name} is a single diffusers component, not a single-file checkpoint. "
                             "Choose a single-file model (.safetensors with UNet, VAE and text encoder).")
        if _has(keys, "text_model.") or _has(keys, "transformer.resblocks."):
            raise BoothError(f"{name} is a text encoder on its own, not a full checkpoint.")
        raise BoothError(f"{name} is not a Stable Diffusion checkpoint (no UNet weights under "
                         f"'{UNET_PREFIX}'). Choose a full SD 1.x, SD 2.x or SDXL base model.")


def _cross_attention_dim(state_dict: dict[str, torch.Tensor]) -> int:
    for key in state_dict:
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            return int(state_dict[key].shape[1])
    raise BoothError("The UNet has no cross-attention layers; it is not a text-to-image Stable Diffusion model.")


def _text_layers(keys: set[str], spec: TextEncoderSpec) -> int:
    pattern = (r"text_model\.encoder\.layers\.(\d+)\." if spec.layout == "hf" else r"transformer\.resblocks\.(\d+)\.")
    found = {int(m.group(1)) for k in keys if k.startswith(spec.prefix) and (m := re.search(pattern, k))}
    return max(found) + 1 if found else 0


def _matches(state_dict: dict[str, torch.Tensor], keys: set[str], family: str, variant: str) -> bool:
    config = architecture(family, variant)
    unet = config["unet"]
    if int(state_dict[UNET_PREFIX + "input_blocks.0.0.weight"].shape[0]) != unet["block_out_channels"][0]:
        return False
    if _cross_attention_dim(state_dict) != unet["cross_attention_dim"]:
        return False
    for spec, text in zip(FAMILIES[family].text_encoders, config["text_encoders"]):
        if _text_layers(keys, spec) != text["num_hidden_layers"]:
            return False
    return True


def _guess_family(keys: set[str], name: str) -> str:
    if _has(keys, "conditioner.embedders.1.model.") and _has(keys, "conditioner.embedders.0.transformer."):
        return "sdxl"
    if _has(keys, "conditioner.embedders.0.model.") and not _has(keys, "conditioner.embedders.1."):
        raise BoothError(f"{name} is an SDXL refiner; Booth trains SDXL base models. Choose the SDXL base checkpoint.")
    if _has(keys, "cond_stage_model.model.transformer.resblocks."):
        return "sd2"
    if _has(keys, "cond_stage_model.transformer.text_model."):
        return "sd15"
    raise BoothError(f"{name} has a UNet but no text encoder Booth recognises (looked for SD 1.x "
                     "'cond_stage_model.transformer.', SD 2.x 'cond_stage_model.model.' and SDXL "
                     "'conditioner.embedders.'). Use a full single-file checkpoint.")


def guess_prediction_type(state_dict: dict[str, torch.Tensor], family: str,
                          metadata: dict[str, str]) -> str | None:
    """What the file says about v-prediction: a ``v_pred`` marker, metadata, or None if it cannot tell."""
    if "v_pred" in state_dict:
        return "v_prediction"
    hint = (metadata.get("modelspec.prediction_type") or metadata.get("booth.prediction_type") or "").lower()
    if hint in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if hint in ("epsilon", "eps"):
        return "epsilon"
    if family != "sd2":
        return "epsilon"
    return None


def guess_sd2_prediction_type(state_dict: dict[str, torch.Tensor]) -> str:
    """SD 2.x files do not say whether they are 768-v or 512-base; a trained v-model's last
    transformer norm has a wider spread (the same heuristic ComfyUI uses). Random weights read as epsilon."""
    key = UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
    value = state_dict.get(key)
    if value is not None and float(value.float().std(unbiased=False)) > 0.09:
        return "v_prediction"
    return "epsilon"


def detect(state_dict: dict[str, torch.Tensor], name: str = "The checkpoint",
           metadata: dict[str, str] | None = None) -> Detected:
    """Recognise the family and variant of an original-layout state dict, or explain why not."""
    keys = set(state_dict)
    _refuse_other_kinds(keys, name)
    conv_in = state_dict.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None or conv_in.ndim != 4:
        raise BoothError(f"{name} is incomplete: the UNet's first convolution is missing. The file may be truncated.")
    if conv_in.shape[1] == 9:
        raise BoothError(f"{name} is an inpainting model (9 input channels); Booth trains standard text-to-image "
                         "models. Choose the non-inpainting version of this model.")
    if conv_in.shape[1] != 4:
        raise BoothError(f"{name} has a UNet with {conv_in.shape[1]} input channels; Booth supports 4-channel "
                         "SD 1.x, SD 2.x and SDXL base models.")
    family = _guess_family(keys, name)
    for variant in family_variants(family):
        if _matches(state_dict, keys, family, variant):
            return Detected(family, variant, guess_prediction_type(state_dict, family, metadata or {}),
                            _has(keys, "model_ema."))
    raise BoothError(f"{name} looks like {FAMILIES[family].label} but its shapes match no supported variant "
                     f"(model channels {conv_in.shape[0]}, context dim {_cross_attention_dim(state_dict)}).")
