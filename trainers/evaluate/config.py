"""What a comparison run measures, as one dataclass that reads from and writes to YAML.

It uses the same dict <-> dataclass conversion as the training config, so the YAML file, ``--set``
overrides and the ComfyUI node all describe a comparison the same way. Lists are sweeps: every
value of ``sampling.steps``, every LoRA strength and every combination of ``sweep.train_steps`` x
``sweep.learning_rates`` becomes one row of the comparison.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import _parse_override, config_from_dict, config_to_dict, read_config_file
from ..errors import BoothError
from ..sampling import SCHEDULERS


@dataclass
class VariantConfig:
    """One model to compare: a checkpoint (default: the base), optionally with a LoRA at one or more strengths."""

    name: str = ""  # row label; "" -> made from the file names
    checkpoint: str = ""  # "" -> base (a DreamBooth result is a checkpoint of its own)
    lora: str = ""  # LoRA .safetensors applied to the checkpoint
    strengths: list[float] = field(default_factory=lambda: [1.0])  # one row per strength (LoRA only)


@dataclass
class SamplingConfig:
    """The same for every variant, so the images differ only by the model."""

    steps: list[int] = field(default_factory=lambda: [30])  # several values: an inference-steps sweep
    guidance_scale: float = 7.5
    scheduler: str = "ddim"
    negative_prompt: str = ""
    height: int | None = None  # None: the model's native resolution
    width: int | None = None
    batch_size: int = 1


@dataclass
class SweepConfig:
    """Train one model per combination of the lists (from ``train_config``) and add each as a variant.

    All runs share one cache folder, so latents and class images are made once for the whole sweep.
    A run whose output file already exists with the same resolved config is reused, not retrained.
    """

    train_config: str = ""  # a training YAML (examples/*.yaml); "" -> no training
    train_steps: list[int] = field(default_factory=list)  # [] -> the YAML's steps
    learning_rates: list[float] = field(default_factory=list)  # [] -> the YAML's learning rate
    lora_strengths: list[float] = field(default_factory=lambda: [1.0])  # for trained LoRAs


@dataclass
class CompareConfig:
    """Everything one comparison needs; see docs/evaluate.md for each field."""

    base: str = ""  # base checkpoint; the first row unless include_base is false
    include_base: bool = True
    variants: list[VariantConfig] = field(default_factory=list)
    subject: str = "sks dog"  # identifier + class; fills "{}" in the prompts
    identifiers: list[str] = field(default_factory=list)  # removed before CLIP-T; [] -> subject minus its last word
    live_subject: bool = False  # default prompts for pets/people (outfits) instead of objects
    prompts: list[str] = field(default_factory=list)  # [] -> the DreamBooth paper's prompts
    prompt_count: int = 0  # keep the first N default prompts; 0 -> all 25
    seeds: list[int] = field(default_factory=lambda: [0])  # seed s, prompt i -> noise seed s + i
    instance_images: str = ""  # reference images for CLIP-I and DINO; "" -> CLIP-T only
    clip_model: str = ""  # HF folder or .safetensors (+ config); "" -> searched in model_dirs
    dino_model: str = ""  # optional; "" -> searched in model_dirs, DINO left out if none
    model_dirs: list[str] = field(default_factory=list)  # where to look for the judge models
    device: str = "auto"
    output_dir: str = "outputs/compare"
    grid_cell_size: int = 256  # longest side of each image in the grids, in pixels
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def identifier_words(self) -> list[str]:
        if self.identifiers:
            return list(self.identifiers)
        return self.subject.split()[:-1]

    def validate(self) -> "CompareConfig":
        """Raise one BoothError listing every bad setting; return self for chaining."""
        problems = []
        if not self.base and (self.include_base or any(not v.checkpoint for v in self.variants)):
            problems.append("base: is empty; set the base checkpoint (.safetensors) to compare against.")
        if not self.include_base and not self.variants and not self.sweep.train_config:
            problems.append("variants: nothing to compare; add variants, a sweep, or set include_base: true.")
        for index, variant in enumerate(self.variants):
            if not variant.checkpoint and not variant.lora:
                problems.append(f"variants[{index}]: give a checkpoint, a lora, or both.")
            if variant.lora and not variant.strengths:
                problems.append(f"variants[{index}].strengths: is empty; give at least one LoRA strength, e.g. [1.0].")
        if not self.seeds:
            problems.append("seeds: is empty; give at least one seed, e.g. [0].")
        if not self.sampling.steps or min(self.sampling.steps) < 1:
            problems.append(f"sampling.steps: {self.sampling.steps} must list step counts of at least 1.")
        if self.sampling.scheduler not in SCHEDULERS:
            problems.append(f"sampling.scheduler: {self.sampling.scheduler!r} is not one of {', '.join(SCHEDULERS)}.")
        if self.sampling.batch_size < 1:
            problems.append(f"sampling.batch_size: is {self.sampling.batch_size}; use at least 1.")
        if self.prompt_count < 0:
            problems.append(f"prompt_count: is {self.prompt_count}; use 0 (all) or a positive number.")
        if self.grid_cell_size < 16:
            problems.append(f"grid_cell_size: is {self.grid_cell_size}; use at least 16 pixels.")
        if (self.sweep.train_steps or self.sweep.learning_rates) and not self.sweep.train_config:
            problems.append("sweep.train_config: is empty but sweep lists are set; name the training YAML to sweep.")
        if self.sweep.train_config and not self.sweep.lora_strengths:
            problems.append("sweep.lora_strengths: is empty; give at least one strength, e.g. [1.0].")
        if problems:
            raise BoothError("Invalid comparison settings:\n  - " + "\n  - ".join(problems))
        return self


def _field_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
        paths += _field_paths(inner, f"{prefix}{f.name}.") if dataclasses.is_dataclass(inner) else [prefix + f.name]
    return paths


def _check_keys(data: Any, cls: type, where: str = "") -> None:
    """Unknown keys named with the closest comparison setting (the training config's hints would mislead)."""
    if not isinstance(data, dict):
        return
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in hints:
            full = where + str(key)
            close = difflib.get_close_matches(full, _field_paths(CompareConfig), n=1, cutoff=0.6)
            raise BoothError(f"Unknown comparison setting {full!r}." + (f" Did you mean {close[0]!r}?" if close else ""))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            _check_keys(value, hint, f"{where}{key}.")
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            for item in value if isinstance(value, list) else []:
                _check_keys(item, typing.get_args(hint)[0], f"{where}{key}.")


def compare_config_from_dict(data: dict[str, Any] | None) -> CompareConfig:
    _check_keys(data or {}, CompareConfig)
    return config_from_dict(data, CompareConfig)


def dump_compare_config(config: CompareConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


def load_compare_config(path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
    """Read a comparison YAML, then apply ``name=value`` overrides; relative paths stay relative to the
    current folder, as for training configs."""
    return apply_compare_overrides(read_config_file(path, compare_config_from_dict), overrides or [])


def apply_compare_overrides(config: CompareConfig, overrides: list[str]) -> CompareConfig:
    """``["seeds=[0, 1]", "sampling.steps=[10, 20]"]`` -> new config (input untouched)."""
    data = config_to_dict(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not sep or not key.strip() or not isinstance(node, dict) or parts[-1] not in node:
            close = difflib.get_close_matches(key.strip(), _field_paths(CompareConfig), n=1, cutoff=0.6)
            raise BoothError(f"Override {item!r} must look like name=value with a comparison setting name"
                             + (f" (did you mean {close[0]!r}?)" if close else "") + ".")
        node[parts[-1]] = _parse_override(raw.strip(), node[parts[-1]])
    return compare_config_from_dict(data)


def parse_variant_lines(text: str) -> list[VariantConfig]:
    """One variant per line, as typed in the ComfyUI node: ``lora: FILE @ 0.5, 1.0`` (strengths optional),
    ``checkpoint: FILE`` or ``checkpoint: FILE + lora: FILE @ 0.8``; '#' starts a comment."""
    variants = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        variant = VariantConfig()
        for part in (p.strip() for p in line.split("+")):
            kind, sep, value = part.partition(":")
            kind = kind.strip().lower()
            if not sep or kind not in ("lora", "checkpoint") or not value.strip():
                raise BoothError(f"Variant line {number} ({raw.strip()!r}): write 'lora: FILE @ 1.0', "
                                 "'checkpoint: FILE' or 'checkpoint: FILE + lora: FILE @ 0.5, 1.0'.")
            name, _, strengths = value.partition("@")
            if kind == "checkpoint":
                variant.checkpoint = name.strip()
                continue
            variant.lora = name.strip()
            if strengths.strip():
                try:
                    variant.strengths = [float(s) for s in strengths.split(",") if s.strip()]
                except ValueError:
                    raise BoothError(f"Variant line {number} ({raw.strip()!r}): strengths after '@' must be "
                                     "numbers separated by commas, e.g. '@ 0.5, 1.0'.") from None
        variants.append(variant)
    return variants


def parse_number_list(text: str, name: str, kind: type = float) -> list:
    """'0.5, 1' -> [0.5, 1.0] (node widgets that take one value or several, comma-separated)."""
    try:
        values = [kind(item) for item in text.replace(";", ",").split(",") if item.strip()]
    except ValueError:
        raise BoothError(f"{name}: {text!r} must be {'whole ' if kind is int else ''}numbers separated by "
                         "commas, e.g. '20, 30'.") from None
    if not values:
        raise BoothError(f"{name} is empty; give at least one value.")
    return values
