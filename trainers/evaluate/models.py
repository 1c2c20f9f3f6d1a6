"""The judge models behind the scores, found and loaded from local files only.

CLIP-T and CLIP-I need a full CLIP (text and vision towers); DINO needs a DINO ViT (DINOv2 or the
original DINO as a plain ViT). Either comes as a Hugging Face folder (``config.json`` + weights,
optionally ``preprocessor_config.json`` and the tokenizer files) or as one ``.safetensors`` file
with its config beside it (``<name>.json`` or ``config.json``). Nothing is ever downloaded, and
when nothing usable is found the error lists every place that was searched.

Images are prepared with torch (resize the short side, centre-crop, normalise) rather than with
the transformers image processors, whose default backend needs torchvision.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..errors import BoothError
from ..files import load_tensors

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_TYPES = {"clip": ("clip",), "dino": ("dinov2", "vit")}
_WHAT = {"clip": "a full CLIP model (text and vision, e.g. openai/clip-vit-large-patch14)",
         "dino": "a DINO ViT (e.g. facebook/dinov2-small or facebook/dino-vits16)"}
_BATCH = 16


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize the short side to ``size``, centre-crop to ``crop`` (height, width), normalise."""

    size: int
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """BHWC floats in [0, 1] -> normalised BCHW float32 pixels of the model's input size."""
        pixels = images.detach().to(torch.float32).permute(0, 3, 1, 2)[:, :3]
        height, width = pixels.shape[-2:]
        if min(height, width) != self.size:
            scale = self.size / min(height, width)
            target = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
            pixels = torch.nn.functional.interpolate(pixels, size=target, mode="bicubic", antialias=True,
                                                     align_corners=False).clamp(0, 1)
        top = max(0, (pixels.shape[-2] - self.crop[0]) // 2)
        left = max(0, (pixels.shape[-1] - self.crop[1]) // 2)
        pixels = pixels[..., top:top + self.crop[0], left:left + self.crop[1]]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (pixels - mean) / std


def _pooled(output) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _normalised(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=-1)


@dataclass
class ClipJudge:
    """A CLIP model with its tokenizer and image preparation; embeddings come back unit-length."""

    model: torch.nn.Module
    tokenizer: object
    preprocess: ImagePreprocess
    source: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        chunks = [_pooled(self.model.get_image_features(pixel_values=self.preprocess(batch).to(self.device)))
                  for batch in images.split(_BATCH)]
        return _normalised(torch.cat(chunks)).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        limit = min(77, int(self.model.config.text_config.max_position_embeddings))
        chunks = []
        for start in range(0, len(texts), _BATCH):
            tokens = self.tokenizer(list(texts[start:start + _BATCH]), padding=True, truncation=True,
                                    max_length=limit, return_tensors="pt")
            chunks.append(_pooled(self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                               attention_mask=tokens["attention_mask"].to(self.device))))
        return _normalised(torch.cat(chunks)).cpu()


@dataclass
class DinoJudge:
    """A DINO ViT; an image's embedding is its class token after the final layer norm."""

    model: torch.nn.Module
    preprocess: ImagePreprocess
    source: Path

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        chunks = [self.model(pixel_values=self.preprocess(batch).to(device)).last_hidden_state[:, 0]
                  for batch in images.split(_BATCH)]
        return _normalised(torch.cat(chunks)).cpu()


# ---- finding ---------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoothError(f"{path} is not a readable JSON config ({exc}).") from None
    if not isinstance(data, dict):
        raise BoothError(f"{path} is not a model config (expected a JSON object).")
    return data


def _config_for(candidate: Path) -> Path | None:
    """The config.json that describes a model folder or a single weights file, if there is one."""
    if candidate.is_dir():
        config = candidate / "config.json"
        has_weights = any(candidate.glob("*.safetensors")) or any(candidate.glob("*.bin"))
        return config if config.is_file() and has_weights else None
    if candidate.suffix.lower() == ".safetensors" and candidate.is_file():
        for config in (candidate.with_suffix(".json"), candidate.with_name("config.json")):
            if config.is_file():
                return config
    return None


def _model_type(config_path: Path) -> str:
    return str(_read_json(config_path).get("model_type", ""))


def _matches(candidate: Path, kind: str) -> bool:
    config = _config_for(candidate)
    try:
        return config is not None and _model_type(config) in MODEL_TYPES[kind]
    except BoothError:
        return False


def find_model(kind: str, path: str | os.PathLike | None = None,
               search_dirs: Iterable[str | os.PathLike] = ()) -> Path | None:
    """The model to use: ``path`` if given (checked), else the first match in ``search_dirs``
    (each folder itself, its subfolders and its .safetensors files, in name order); None if none."""
    if kind not in MODEL_TYPES:
        raise BoothError(f"Unknown judge model kind {kind!r}; use one of {', '.join(MODEL_TYPES)}.")
    if path:
        chosen = Path(path).expanduser()
        if not chosen.exists():
            raise BoothError(f"{kind} model not found: {chosen}. Give a Hugging Face model folder or a .safetensors "
                             f"file with its config.json, holding {_WHAT[kind]}.")
        config = _config_for(chosen)
        if config is None:
            raise BoothError(f"{chosen} is not a usable {kind} model: a folder needs config.json and a weights file "
                             "(.safetensors), a .safetensors file needs <name>.json or config.json beside it.")
        found_type = _model_type(config)
        if found_type not in MODEL_TYPES[kind]:
            raise BoothError(f"{chosen} holds a {found_type or 'model of unknown type'!r} model ({config}); the "
                             f"{kind} score needs {_WHAT[kind]} (model_type {' or '.join(MODEL_TYPES[kind])}).")
        return chosen
    for folder in map(Path, search_dirs):
        if not folder.is_dir():
            continue
        candidates = [folder] + sorted(folder.iterdir())
        for candidate in candidates:
            if _matches(candidate, kind):
                return candidate
    return None


def missing_model_error(kind: str, search_dirs: Iterable[str | os.PathLike]) -> BoothError:
    """What was looked for, where, and how to provide it."""
    places = [str(Path(d)) + ("" if Path(d).is_dir() else " (does not exist)") for d in search_dirs]
    where = "\n  - ".join(places) if places else "(no folders given)"
    return BoothError(f"No {kind} model found: the {kind} score needs {_WHAT[kind]} on this machine (nothing is "
                      f"downloaded). Looked for a Hugging Face folder (config.json with model_type "
                      f"{' or '.join(MODEL_TYPES[kind])} + .safetensors weights) or a .safetensors file with its "
                      f"config.json in:\n  - {where}\nPut one there, or set its path explicitly.")


# ---- loading ---------------------------------------------------------------------------------------

def _preprocess(source: Path, default_mean, default_std, default_size: int) -> ImagePreprocess:
    """Input size and normalisation from preprocessor_config.json when the model has one."""
    folder = source if source.is_dir() else source.parent
    file = folder / "preprocessor_config.json"
    settings = _read_json(file) if file.is_file() else {}

    def side(value, fallback: int) -> tuple[int, int]:
        if isinstance(value, dict):
            if "shortest_edge" in value:
                return int(value["shortest_edge"]), int(value["shortest_edge"])
            return int(value.get("height", fallback)), int(value.get("width", fallback))
        return (int(value), int(value)) if value else (fallback, fallback)

    size = side(settings.get("size"), default_size)
    crop = side(settings.get("crop_size"), default_size) if settings.get("do_center_crop", True) else size
    return ImagePreprocess(min(size), crop, tuple(settings.get("image_mean", default_mean)),
                           tuple(settings.get("image_std", default_std)))


def _load_weights(model_class, source: Path, config_path: Path, device: str | torch.device) -> torch.nn.Module:
    """A folder through from_pretrained (offline); a single file into a model built from its config."""
    if source.is_dir():
        try:
            model = model_class.from_pretrained(str(source), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BoothError(f"{source} could not be loaded as a {model_class.__name__} ({exc}).") from None
    else:
        config = model_class.config_class.from_dict(_read_json(config_path))
        model = model_class(config)
        tensors, _ = load_tensors(source)
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing:
            raise BoothError(f"{source} does not fit its config {config_path}: {len(missing)} weights missing "
                             f"(first: {missing[0]}), {len(unexpected)} unexpected. Use the config that came with it.")
    return model.to(device, torch.float32).eval().requires_grad_(False)


def _clip_tokenizer(source: Path, tokenizer_dir: str | None):
    """The model's own tokenizer files if it has them, else the CLIP vocabulary found offline
    (``tokenizer_dir`` first: inside ComfyUI, its own vocabulary folder)."""
    from ..checkpoint.tokenizers import clip_tokenizer

    folder = source if source.is_dir() else source.parent
    has_vocab = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    return clip_tokenizer("<|endoftext|>", str(folder) if has_vocab else tokenizer_dir)


def load_clip(path: str | os.PathLike | None = None, search_dirs: Sequence[str | os.PathLike] = (),
              device: str | torch.device = "cpu", tokenizer_dir: str | None = None) -> ClipJudge:
    """The CLIP model at ``path`` or the first in ``search_dirs``; a BoothError listing the search if none."""
    from transformers import CLIPModel

    source = find_model("clip", path, search_dirs)
    if source is None:
        raise missing_model_error("clip", search_dirs)
    config_path = _config_for(source)
    model = _load_weights(CLIPModel, source, config_path, device)
    size = int(model.config.vision_config.image_size)
    return ClipJudge(model, _clip_tokenizer(source, tokenizer_dir), _preprocess(source, CLIP_MEAN, CLIP_STD, size),
                     source)


def load_dino(path: str | os.PathLike | None = None, search_dirs: Sequence[str | os.PathLike] = (),
              device: str | torch.device = "cpu", required: bool = False) -> DinoJudge | None:
    """The DINO model at ``path`` or the first in ``search_dirs``; None when none is found and not
    ``required`` (the DINO score is optional), a BoothError listing the search when it is."""
    from transformers import Dinov2Model, ViTModel

    source = find_model("dino", path, search_dirs)
    if source is None:
        if required:
            raise missing_model_error("dino", search_dirs)
        return None
    config_path = _config_for(source)
    model_class = Dinov2Model if _model_type(config_path) == "dinov2" else ViTModel
    model = _load_weights(model_class, source, config_path, device)
    size = int(model.config.image_size)
    return DinoJudge(model, _preprocess(source, IMAGENET_MEAN, IMAGENET_STD, size), source)
