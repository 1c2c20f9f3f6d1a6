"""Training settings: one dataclass tree, YAML in and out, ``a.b=value`` overrides, validation.

This is the single source of defaults: the CLI, the ComfyUI nodes and the example YAML files all
start from :class:`TrainConfig`, so a run's saved YAML (also stored in the LoRA's metadata) is a
complete, reloadable record of how it was made. Fields left ``None`` take the method's default
(:meth:`TrainConfig.resolved`), which keeps a user's YAML short and the defaults in one table.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from .errors import BoothError
from .formatting import is_text
from .limits import MAX_REPEATS, MAX_RESOLUTION

T = TypeVar("T")

if typing.TYPE_CHECKING:
    from .lora.network import LoraSettings

METHODS = ("lora", "dreambooth_lora", "dreambooth")
LR_SCHEDULERS = ("constant", "cosine", "linear")
OPTIMIZERS = ("adamw", "adamw8bit", "prodigy")
MIXED_PRECISION = ("no", "fp16", "bf16")
PREDICTION_TYPES = ("auto", "epsilon", "v_prediction")
SAVE_DTYPES = ("fp16", "bf16", "fp32")
CROPS = ("center", "random")
SAMPLE_SCHEDULERS = ("ddim", "euler", "dpm++")  # trainers.sampling.SCHEDULERS (not imported: it needs torch)

# What differs between methods besides what is trainable (see train/recipes.py). LoRA learns a small
# low-rank delta and tolerates ~1e-4; a full UNet fine-tune overfits above a few 1e-6.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"learning_rate": 1e-4, "prior_preservation": False},
    "dreambooth_lora": {"learning_rate": 1e-4, "prior_preservation": True},
    "dreambooth": {"learning_rate": 2e-6, "prior_preservation": True},
}


@dataclass
class DataConfig:
    """How instance (and class) images become training pixels."""

    resolution: int = 512
    crop: str = "center"  # random: a few fixed random crops per image (latents are cached, so not fresh each step)
    buckets: bool = False  # keep aspect ratios: sizes of about resolution**2 pixels
    flip: bool = False  # also train on mirrored copies
    repeats: int = 1  # for images outside kohya "N_caption" folders


@dataclass
class PriorConfig:
    """DreamBooth prior preservation: keep the class looking like the class while learning the subject."""

    enabled: bool | None = None  # None: on for the DreamBooth methods, off for plain LoRA
    class_prompt: str = ""
    class_images: str = ""  # folder; "" -> <cache_dir>/class_images/<fingerprint of base + prompt>
    num_class_images: int = 100
    loss_weight: float = 1.0
    generation_steps: int = 25


@dataclass
class LoraConfig:
    """Fields of :class:`trainers.lora.network.LoraSettings` (mirrored so reading settings needs no peft)."""

    rank: int = 16
    alpha: float = 16.0
    unet_targets: tuple[str, ...] = ("attention",)
    text_encoder: bool = False
    dropout: float = 0.0

    def settings(self) -> "LoraSettings":
        from .lora.network import LoraSettings

        return LoraSettings(**dataclasses.asdict(self))


@dataclass
class DreamBoothConfig:
    """Full fine-tune (method: dreambooth) settings beyond what every method shares."""

    train_text_encoder_steps: int = 0  # 0: frozen; N: trained for the first N steps only (from the start it overfits)
    use_ema: bool = False  # save an exponential moving average of the UNet (costs one more UNet copy in memory)
    ema_decay: float = 0.999  # ~1/(1-decay) steps of memory; 0.999 suits runs of about 1000 steps


@dataclass
class SampleConfig:
    """Preview images during training; same prompts and seeds every time so they are comparable."""

    every: int = 0  # also after the last step; 0: no previews
    prompts: list[str] = field(default_factory=list)  # empty: the instance prompt
    steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    scheduler: str = "ddim"


@dataclass
class TrainConfig:
    """Everything one training run needs; nested sections group data, prior, LoRA, DreamBooth and preview settings."""

    method: str = "dreambooth_lora"
    base: str = ""
    images: str = ""
    instance_prompt: str = ""
    output: str = ""  # LoRA (or checkpoint) file; "" -> <output_dir>/<method>.safetensors
    output_dir: str = "outputs/train"  # caches, samples, loss.png, losses.csv, resumable state
    cache_dir: str = ""  # "" -> <output_dir>/cache
    device: str = "auto"
    seed: int = 0
    steps: int = 500
    batch_size: int = 1
    gradient_accumulation: int = 1
    learning_rate: float | None = None
    text_encoder_lr: float | None = None  # None: same as learning_rate
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: str = "fp16"  # CUDA only; CPU always trains in fp32
    gradient_checkpointing: bool = False
    min_snr_gamma: float = 0.0  # 0: off; 5 is the published recommendation
    noise_offset: float = 0.0
    prediction_type: str = "auto"  # auto: the checkpoint's
    save_every: int = 0  # resumable state (and, for LoRA, a snapshot file) every N steps; 0: state only if stopped
    save_dtype: str = "fp16"
    data: DataConfig = field(default_factory=DataConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    dreambooth: DreamBoothConfig = field(default_factory=DreamBoothConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def resolved(self) -> "TrainConfig":
        """A copy with every method default and derived path filled in (what a run really uses)."""
        if self.method not in METHOD_DEFAULTS:
            raise BoothError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}.")
        out = config_from_dict(config_to_dict(self))
        defaults = METHOD_DEFAULTS[self.method]
        out.learning_rate = defaults["learning_rate"] if out.learning_rate is None else out.learning_rate
        out.text_encoder_lr = out.learning_rate if out.text_encoder_lr is None else out.text_encoder_lr
        out.prior.enabled = defaults["prior_preservation"] if out.prior.enabled is None else out.prior.enabled
        out.output = out.output or str(Path(out.output_dir) / f"{out.method}.safetensors")
        out.cache_dir = out.cache_dir or str(Path(out.output_dir) / "cache")
        return out

    def validate(self) -> "TrainConfig":
        """Raise one BoothError listing every bad setting and its fix; return self for chaining."""
        problems = _problems(self.resolved() if self.method in METHODS else self)
        if problems:
            raise BoothError("Invalid training settings:\n  - " + "\n  - ".join(problems))
        return self


def _problems(c: TrainConfig) -> list[str]:
    """Every violated constraint as 'field: what is wrong; what to do'."""
    found: list[str] = []

    def need(ok: bool, name: str, message: str) -> None:
        if not ok:
            found.append(f"{name}: {message}")

    def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
        need(value in allowed, name, f"{value!r} is not one of {', '.join(allowed)}.")

    choice("method", c.method, METHODS)
    choice("lr_scheduler", c.lr_scheduler, LR_SCHEDULERS)
    choice("optimizer", c.optimizer, OPTIMIZERS)
    choice("mixed_precision", c.mixed_precision, MIXED_PRECISION)
    choice("prediction_type", c.prediction_type, PREDICTION_TYPES)
    choice("save_dtype", c.save_dtype, SAVE_DTYPES)
    choice("data.crop", c.data.crop, CROPS)
    choice("sample.scheduler", c.sample.scheduler, SAMPLE_SCHEDULERS)
    need(c.device in ("auto", "cpu", "cuda") or c.device.startswith("cuda:"), "device",
         f"{c.device!r} is not auto, cpu, cuda or cuda:N.")
    need(c.output.lower().endswith(".safetensors"), "output",
         f"{c.output!r} must end in .safetensors (the format ComfyUI and other front ends load).")
    need(bool(c.instance_prompt.strip()), "instance_prompt", "is empty; describe the subject, e.g. 'a photo of sks dog'.")
    for name in ("steps", "batch_size", "gradient_accumulation", "data.repeats", "sample.steps",
                 "prior.generation_steps"):
        value = _get(c, name)
        need(value >= 1, name, f"is {value}; it must be at least 1.")
    for name in ("learning_rate", "text_encoder_lr", "weight_decay", "max_grad_norm", "min_snr_gamma",
                 "noise_offset", "warmup_steps", "save_every", "sample.every", "prior.loss_weight"):
        value = _get(c, name)
        need(value is None or 0 <= value < math.inf, name, f"is {value}; it must be a finite number, 0 or more.")
    need(-2**63 <= c.seed < 2**63, "seed", f"is {c.seed}; use a whole number that fits in 64 bits, e.g. 0 to "
                                          f"{2**63 - 1}.")
    for name, value in _flatten_text(config_to_dict(c)):
        need(is_text(value), name, f"{value!r} holds bytes that are not UTF-8 text (from a terminal or file in "
                                    "another encoding); retype it or save the file as UTF-8.")
    res = c.data.resolution
    need(64 <= res <= MAX_RESOLUTION and res % 8 == 0, "data.resolution",
         f"is {res}; use a multiple of 8 from 64 to {MAX_RESOLUTION} (512 for SD1.5, 1024 for SDXL).")
    need(c.data.repeats <= MAX_REPEATS, "data.repeats", f"is {c.data.repeats}; use at most {MAX_REPEATS:,}.")
    if c.method != "dreambooth":
        try:
            c.lora.settings().check()
        except BoothError as exc:
            found.append(f"lora: {exc}")
    _dreambooth_problems(c, need)
    need(c.warmup_steps < c.steps or c.warmup_steps == 0, "warmup_steps",
         f"is {c.warmup_steps} but steps is {c.steps}; warm up for fewer steps than the run.")
    if c.prior.enabled:
        need(bool(c.prior.class_prompt.strip()), "prior.class_prompt",
             "is empty but prior preservation is on; set it (e.g. 'a photo of dog') or set prior.enabled=false.")
        need(c.prior.num_class_images >= max(1, c.batch_size), "prior.num_class_images",
             f"is {c.prior.num_class_images} but each step takes batch_size={c.batch_size} class images; "
             f"use at least {max(1, c.batch_size)}.")
    return found


def _flatten_text(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted name, text) of every text setting, list items included."""
    found = []
    for key, value in data.items():
        if isinstance(value, dict):
            found += _flatten_text(value, f"{prefix}{key}.")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                found.append((prefix + key, item))
    return found


def _dreambooth_problems(c: TrainConfig, need: Callable[[bool, str, str], None]) -> None:
    db, defaults = c.dreambooth, DreamBoothConfig()
    if c.method != "dreambooth":
        for name in ("train_text_encoder_steps", "use_ema"):
            need(getattr(db, name) == getattr(defaults, name), f"dreambooth.{name}",
                 f"applies to method=dreambooth only (method is {c.method}); remove it or change method.")
    need(db.train_text_encoder_steps >= 0, "dreambooth.train_text_encoder_steps",
         f"is {db.train_text_encoder_steps}; use 0 (frozen) or the number of steps to train it for.")
    need(0 <= db.ema_decay < 1, "dreambooth.ema_decay", f"is {db.ema_decay}; use a value in [0, 1), e.g. 0.999.")


# ---- dataclass <-> plain dict <-> YAML ------------------------------------------------------------

def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) in field order, ready for YAML."""
    return dataclasses.asdict(config, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v
                                                                  for k, v in items})


def config_from_dict(data: dict[str, Any] | None, cls: type = TrainConfig, where: str = "") -> Any:
    """Build ``cls`` from a nested dict, coercing values; unknown keys -> BoothError with suggestions."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BoothError(f"{where.rstrip('.') or 'the config'} must be a mapping of settings, not "
                         f"{type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise BoothError(" ".join(_unknown_message(where + str(k)) for k in unknown))
    values = {k: _coerce(v, hints[k], where + k) for k, v in data.items()}
    return cls(**values)


_ALIASES = {"lr": "learning_rate", "learning_rate_text_encoder": "text_encoder_lr", "max_train_steps": "steps",
            "train_batch_size": "batch_size", "gradient_accumulation_steps": "gradient_accumulation",
            "snr_gamma": "min_snr_gamma", "with_prior_preservation": "prior.enabled"}


def _setting_paths(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    paths = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        paths += _setting_paths(hint, f"{prefix}{f.name}.") if dataclasses.is_dataclass(hint) else [prefix + f.name]
    return paths


def _unknown_message(full: str) -> str:
    """Name the unknown setting and the most likely intended one (typo, wrong section, other tools' names)."""
    paths = _setting_paths()
    leaf = full.split(".")[-1]
    guess = _ALIASES.get(full) or _ALIASES.get(leaf)
    guess = guess or next((p for p in paths if p.split(".")[-1] == leaf and p != full), None)
    close = difflib.get_close_matches(full, paths, n=1, cutoff=0.6)
    guess = guess or (close[0] if close else None)
    if not guess:
        leaves = difflib.get_close_matches(leaf, [p.split(".")[-1] for p in paths], n=1, cutoff=0.6)
        guess = next((p for p in paths if leaves and p.split(".")[-1] == leaves[0]), None)
    return f"Unknown setting {full!r}." + (f" Did you mean {guess!r}?" if guess else "")


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Turn a YAML or command-line value into the field's type, or say which field is wrong."""
    if dataclasses.is_dataclass(hint):
        return config_from_dict(value, hint, name + ".")
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
            return None
        return _coerce(value, args[0], name)
    if typing.get_origin(hint) in (list, tuple):
        if isinstance(value, str):  # one bare item; several need YAML list syntax, as prompts hold commas
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise BoothError(f"{name}: expected a list, got {value!r}.")
        return typing.get_origin(hint)(_coerce(v, args[0], name) for v in value)
    try:
        if hint is bool:
            return _to_bool(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return "" if value is None else str(value)
    except (TypeError, ValueError, OverflowError):
        raise BoothError(f"{name}: {value!r} is not a valid {hint.__name__}.") from None
    return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


def read_config_file(path: str | Path, from_dict: Callable[[Any], T]) -> T:
    """Parse a YAML config file into a dataclass with ``from_dict``; every error names the file."""
    file = Path(path)
    if not file.is_file():
        raise BoothError(f"Config file not found: {file}" + (" (it is a folder)" if file.is_dir() else ""))
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BoothError(f"Config file {file} cannot be read: {exc.strerror or exc}. Check its permissions.") from None
    except UnicodeDecodeError as exc:
        raise BoothError(f"Config file {file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position "
                         f"{exc.start}). Save it as UTF-8 YAML.") from None
    except yaml.YAMLError as exc:
        raise BoothError(f"{file} is not valid YAML: {exc}") from None
    try:
        return from_dict(data)
    except BoothError as exc:
        raise BoothError(f"{file}: {exc}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (and apply ``a.b=value`` overrides); errors name the file."""
    return apply_overrides(read_config_file(path, config_from_dict), overrides or [])


def save_config(config: TrainConfig, path: str | Path) -> Path:
    from .files import atomic_write_text

    return atomic_write_text(path, dump_config(config))


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """``["steps=100", "lora.rank=8", "sample.prompts=[a dog, a cat]"]`` -> new config (input untouched).

    Values are read as YAML, so ``true``, ``1e-4`` and ``[a, b]`` mean what they look like; a bare
    text with a comma stays one text (prompts contain commas).
    """
    data = config_to_dict(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BoothError(f"Override {item!r} must look like name=value (e.g. steps=200 or lora.rank=8).")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise BoothError(_unknown_message(key.strip()))
            node = node[part]
        if parts[-1] not in node:
            raise BoothError(_unknown_message(key.strip()))
        node[parts[-1]] = _parse_override(raw.strip(), node[parts[-1]])
    return config_from_dict(data)


def _parse_override(raw: str, current: Any) -> Any:
    """Text fields take the text verbatim; lists take ``[a, b]`` or one bare item; the rest read as YAML."""
    if isinstance(current, str):
        return raw
    if isinstance(current, list) and not raw.startswith("["):
        return [raw]
    try:
        return yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        return raw
