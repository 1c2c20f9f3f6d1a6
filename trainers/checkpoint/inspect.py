"""Describe a checkpoint file without loading its weights into models."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

from ..errors import BoothError
from ..files import load_tensors, read_safetensors_header, require_file
from .families import FAMILIES, VARIANTS, detect, guess_sd2_prediction_type
from .keymap import UNET_PREFIX, VAE_PREFIX

_COMPONENT_PREFIXES = (("unet", UNET_PREFIX), ("vae", VAE_PREFIX), ("ema", "model_ema."),
                       ("text_encoder", "cond_stage_model."), ("text_encoder", "conditioner.embedders."))


class LazySafetensors(Mapping):
    """A read-only state dict over a .safetensors file that reads a tensor only when asked for it."""

    def __init__(self, path: Path, header: dict):
        self._path, self._header = path, header

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._header:
            raise KeyError(key)
        with safe_open(str(self._path), framework="pt") as handle:
            return handle.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._header)

    def __len__(self) -> int:
        return len(self._header)


def _component(key: str) -> str:
    for name, prefix in _COMPONENT_PREFIXES:
        if key.startswith(prefix):
            return name
    return "other"


def describe_checkpoint(path: str | os.PathLike) -> dict:
    """Family, prediction type, parameters per component, dtypes, size and metadata of a checkpoint."""
    file = require_file(path)
    if file.suffix.lower() == ".safetensors":
        header, metadata = read_safetensors_header(file)
        shapes = {k: (tuple(v["shape"]), v["dtype"]) for k, v in header.items()}
        state: Mapping = LazySafetensors(file, header)
    else:
        tensors, metadata = load_tensors(file)
        shapes = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()}
        state = tensors
    if not shapes:
        raise BoothError(f"{file} holds no tensors: it is an empty file, neither a model nor a LoRA. Re-export it.")
    detected = detect(state, str(file), metadata)  # type: ignore[arg-type]
    prediction, how = detected.prediction_type, "from the file"
    if prediction is None:
        prediction, how = guess_sd2_prediction_type(state), "guessed from the weights; set prediction_type to be sure"
    parameters: dict[str, int] = {}
    dtypes: dict[str, int] = {}
    for key, (shape, dtype) in shapes.items():
        count = 1
        for dim in shape:
            count *= dim
        parameters[_component(key)] = parameters.get(_component(key), 0) + count
        dtypes[dtype] = dtypes.get(dtype, 0) + 1
    return {"file": str(file), "family": detected.family, "family_label": FAMILIES[detected.family].label,
            "variant": VARIANTS[detected.variant], "prediction_type": prediction,
            "prediction_type_source": how, "has_ema": detected.has_ema, "tensors": len(shapes),
            "parameters": parameters, "dtypes": dtypes, "size_bytes": file.stat().st_size, "metadata": metadata}
