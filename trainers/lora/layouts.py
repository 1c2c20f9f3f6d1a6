"""Reading LoRA files of every common layout into one form, and writing that form in the kohya layout.

Users collect LoRAs from kohya's scripts, LyCORIS, diffusers/peft training scripts and ComfyUI's own
trainer. Each layout names the same thing differently; here every tensor key is split into a module
name and a role (down, up, mid, alpha, whole difference), the module name is turned into its kohya
name, and the result is one :class:`LoraFile`. A key that fits no rule is kept in
``LoraFile.unknown`` so callers can list it; nothing is dropped silently. docs/formats.md lists the
rules.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BoothError
from ..files import load_tensors, read_safetensors_header, require_file, save_tensors
from .kohya import ALPHA, DOWN, MID, UP, LoraModule, LoraWeights, read_lora
from .names import UNET_PREFIX, underscored

KOHYA, LYCORIS, COMFYUI, PEFT, DIFFUSERS_OLD = "kohya", "kohya (LyCORIS names)", "ComfyUI", "diffusers/peft", \
    "diffusers (attention processors)"
DIFF, DIFF_BIAS = "diff", "diff_b"
PEFT_METADATA = "lora_adapter_metadata"  # diffusers' JSON of each part's LoraConfig (lora_alpha, alpha_pattern)

# Key suffix -> role, longest first so e.g. ".lora_A.default.weight" wins over ".weight"-like endings.
_ROLES: tuple[tuple[str, str], ...] = (
    (".lora_linear_layer.down.weight", DOWN), (".lora_linear_layer.up.weight", UP),
    (".lora_A.default.weight", DOWN), (".lora_B.default.weight", UP),
    ("." + DOWN, DOWN), ("." + UP, UP), ("." + MID, MID),
    (".lora_A.weight", DOWN), (".lora_B.weight", UP),
    (".lora.down.weight", DOWN), (".lora.up.weight", UP),
    ("_lora.down.weight", DOWN), ("_lora.up.weight", UP),
    ("." + ALPHA, ALPHA), ("." + DIFF_BIAS, DIFF_BIAS), ("." + DIFF, DIFF),
)
_KOHYA_PREFIXES = (UNET_PREFIX, "lora_te_", "lora_te1_", "lora_te2_")
_DIFFUSERS_UNET_START = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out", "time_embedding.")
_COMFY_TEXT_ENCODERS = {"clip_l": "lora_te1_", "clip_g": "lora_te2_", "clip_h": "lora_te_"}
# UNet layers that are 3x3 convolutions, by kohya name ending (original and diffusers paths). ComfyUI's
# trainer stores their factors as matrices ([rank, in*9]); kohya's layout needs [rank, in, 3, 3].
_CONV_3X3 = re.compile(r"(_in_layers_2|_out_layers_3|_op|output_blocks_\d+_[12]_conv|input_blocks_0_0|_out_2|"
                       r"_conv1|_conv2|samplers_0_conv|_conv_in|_conv_out)$")


@dataclass
class LoraFile:
    """A LoRA in Booth's one form: low-rank modules and whole differences under kohya module names.

    ``diffs`` holds differences stored whole (ComfyUI's ``.diff``/``.diff_b``: norm weights and
    biases) as ``"<module>.weight"`` / ``"<module>.bias"`` -> tensor. ``unknown`` lists the file's
    keys that fit no layout rule (LoHa, LoKr, DoRA scales, ...): they are reported, never applied.
    """

    lora: LoraWeights
    diffs: dict[str, torch.Tensor] = field(default_factory=dict)
    layouts: tuple[str, ...] = ()
    unknown: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.lora.name

    @property
    def metadata(self) -> dict[str, str]:
        return self.lora.metadata

    @property
    def modules(self) -> dict[str, LoraModule]:
        return self.lora.modules


def split_key(key: str) -> tuple[str, str] | None:
    """(module name, role) of a LoRA tensor key in any layout, or None."""
    for suffix, role in _ROLES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], role
    return None


def _without_processor(path: str) -> str:
    """Old diffusers attention processors: ``attn1.processor.to_q`` is ``attn1.to_q``, ``to_out`` is ``to_out.0``."""
    if ".processor." not in path:
        return path
    path = path.replace(".processor.", ".")
    return path + ".0" if path.endswith(".to_out") else path


def _text_name(prefix: str, path: str) -> str:
    """Kohya text-encoder names always carry ``text_model_``, whichever transformers wrote the path."""
    return f"{prefix}text_model_{underscored(path.removeprefix('text_model.'))}"


def kohya_name(module: str, has_second_encoder: bool) -> tuple[str, str, str] | None:
    """(kohya name, layout, part for peft alphas) of a module name in any layout, or None."""
    if module.startswith(_KOHYA_PREFIXES):
        return module, KOHYA, ""
    if module.startswith("lycoris_"):
        return UNET_PREFIX + module.removeprefix("lycoris_"), LYCORIS, ""
    if module.startswith("diffusion_model."):
        return UNET_PREFIX + underscored(module.removeprefix("diffusion_model.")), COMFYUI, ""
    if module.startswith("text_encoders."):
        encoder, _, rest = module.removeprefix("text_encoders.").partition(".")
        prefix = _COMFY_TEXT_ENCODERS.get(encoder)
        if prefix is None or not rest.startswith("transformer."):
            return None
        if prefix == "lora_te1_" and not has_second_encoder:
            prefix = "lora_te_"
        return _text_name(prefix, rest.removeprefix("transformer.")), COMFYUI, ""
    part, _, path = module.partition(".")
    if part in ("text_encoder", "text_encoder_2"):
        prefix = "lora_te2_" if part == "text_encoder_2" else ("lora_te1_" if has_second_encoder else "lora_te_")
        return _text_name(prefix, path), PEFT, part
    if part != "unet":
        part, path = "unet", module
        if not path.startswith(_DIFFUSERS_UNET_START):
            return None
    layout = DIFFUSERS_OLD if ".processor." in path else PEFT
    return UNET_PREFIX + underscored(_without_processor(path)), layout, part


def _peft_alpha(settings: dict, part: str, path: str) -> float | None:
    """A module's alpha from diffusers' saved LoraConfig: ``alpha_pattern`` (peft's rule: the module
    path ends with the pattern) before the part's ``lora_alpha``."""
    for pattern, alpha in (settings.get(f"{part}.alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", path):
            return float(alpha)
    alpha = settings.get(f"{part}.lora_alpha")
    return float(alpha) if alpha is not None else None


def _peft_settings(metadata: dict[str, str]) -> dict:
    try:
        settings = json.loads(metadata.get(PEFT_METADATA, "{}"))
    except json.JSONDecodeError:
        return {}
    return settings if isinstance(settings, dict) else {}


def _as_kohya_conv(name: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrix factors of a 3x3 convolution (ComfyUI's trainer) -> kohya's [rank, in, 3, 3] and [out, rank, 1, 1]."""
    down, up = tensors.get(DOWN), tensors.get(UP)
    if (down is None or up is None or down.ndim != 2 or up.ndim != 2 or MID in tensors
            or not _CONV_3X3.search(name) or down.shape[1] % 9):
        return tensors
    return {**tensors, DOWN: down.reshape(down.shape[0], -1, 3, 3), UP: up[:, :, None, None]}


def _label(source: str | os.PathLike | dict) -> str:
    return "The LoRA" if isinstance(source, dict) else str(source)


def read_lora_file(source: str | os.PathLike | dict[str, torch.Tensor], *,
                   metadata: dict[str, str] | None = None) -> LoraFile:
    """Read a LoRA in any supported layout (file path or state dict) into a :class:`LoraFile`.

    A missing alpha means alpha = rank, as in every reader of these layouts; diffusers files get
    theirs from the ``lora_adapter_metadata`` they carry.
    """
    label = _label(source)
    if isinstance(source, dict):
        tensors, meta = source, dict(metadata or {})
    else:
        tensors, meta = load_tensors(source)
    if not tensors:
        raise BoothError(f"{label} holds no tensors; it is not a LoRA.")
    broken = next((key for key, value in tensors.items()
                   if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)
    if broken is not None:
        raise BoothError(f"{label} is broken: {broken} holds NaN or infinite values, which would turn every image "
                         "it touches black or into noise. Re-download or re-train it.")
    has_second_encoder = any(k.startswith(("text_encoder_2.", "text_encoders.clip_g.", "lora_te2_")) for k in tensors)
    peft_settings = _peft_settings(meta)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    sources: dict[str, list[str]] = {}
    diffs: dict[str, torch.Tensor] = {}
    layouts: dict[str, None] = {}
    unknown: list[str] = []
    peft_paths: dict[str, tuple[str, str]] = {}
    for key, value in tensors.items():
        split = split_key(key)
        named = kohya_name(split[0], has_second_encoder) if split else None
        if named is None:
            unknown.append(key)
            continue
        (module, role), (name, layout, part) = split, named
        layouts[layout] = None
        if role in (DIFF, DIFF_BIAS):
            diffs[f"{name}.{'bias' if role == DIFF_BIAS else 'weight'}"] = value
            continue
        grouped.setdefault(name, {})[role] = value
        sources.setdefault(name, []).append(key)
        if part:
            peft_paths[name] = (part, module.partition(".")[2] if module.startswith(part + ".") else module)
    kohya: dict[str, torch.Tensor] = {}
    for name, parts in grouped.items():
        if set(parts) == {ALPHA}:  # an alpha without factors scales nothing
            unknown.extend(sources[name])
            continue
        if ALPHA not in parts and name in peft_paths:
            alpha = _peft_alpha(peft_settings, *peft_paths[name])
            if alpha is not None:
                parts = {**parts, ALPHA: torch.tensor(alpha)}
        kohya.update({f"{name}.{role}": value for role, value in _as_kohya_conv(name, parts).items()})
    lora = _read_kohya(kohya, meta, label) if kohya else LoraWeights({}, meta, label)
    if not lora.modules and not diffs:
        raise BoothError(f"{label} is not a LoRA Booth can read: none of its {len(tensors)} keys follows the kohya, "
                         f"LyCORIS, diffusers/peft or ComfyUI layout (first: {next(iter(tensors))!r}).")
    return LoraFile(lora, diffs, tuple(layouts), sorted(unknown))


def _read_kohya(tensors: dict[str, torch.Tensor], metadata: dict[str, str], label: str) -> LoraWeights:
    """kohya's reader checks each module's shapes; its messages name the file."""
    try:
        lora = read_lora(tensors, metadata=metadata)
    except BoothError as error:
        text = str(error)
        raise BoothError(label + text[len("The LoRA"):] if text.startswith("The LoRA") else text) from None
    lora.name = label
    return lora


def lora_file_tensors(lora: LoraFile, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The kohya-layout tensors of ``lora`` (whole differences as ``.diff``/``.diff_b``, which ComfyUI
    and A1111 read under kohya names)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in lora.modules.items():
        tensors[f"{name}.{DOWN}"] = module.down.to(dtype)
        tensors[f"{name}.{UP}"] = module.up.to(dtype)
        tensors[f"{name}.{ALPHA}"] = torch.tensor(float(module.alpha), dtype=dtype)
        if module.mid is not None:
            tensors[f"{name}.{MID}"] = module.mid.to(dtype)
    for key, value in lora.diffs.items():
        name, _, kind = key.rpartition(".")
        tensors[f"{name}.{DIFF_BIAS if kind == 'bias' else DIFF}"] = value.to(dtype)
    return tensors


def save_lora_file(lora: LoraFile, path: str | os.PathLike, *, metadata: dict[str, str] | None = None,
                   dtype: torch.dtype = torch.float16, overwrite: bool = False) -> Path:
    """Write ``lora`` as a kohya-layout ``.safetensors`` atomically; ``metadata`` replaces the file's."""
    target = Path(path)
    if target.suffix.lower() != ".safetensors":
        raise BoothError(f"LoRA output {target} must end in .safetensors (the format ComfyUI and kohya load).")
    if target.exists() and not overwrite:
        raise BoothError(f"Output {target} already exists; choose another name or pass --overwrite.")
    return save_tensors(lora_file_tensors(lora, dtype), target, lora.metadata if metadata is None else metadata)


def looks_like_lora(path: str | os.PathLike) -> bool:
    """Whether most of a file's tensor names are a LoRA's (only the header is read for .safetensors)."""
    file = require_file(path)
    keys = list(read_safetensors_header(file)[0] if file.suffix.lower() == ".safetensors" else load_tensors(file)[0])
    return bool(keys) and 2 * sum(split_key(key) is not None for key in keys) > len(keys)
