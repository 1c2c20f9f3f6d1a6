"""Re-save a checkpoint as .safetensors: change dtype, drop EMA weights, nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import BoothError
from ..files import check_output_file, load_tensors, same_file, save_tensors
from .families import detect


def convert_checkpoint(source: str | os.PathLike, target: str | os.PathLike, *, dtype: torch.dtype | None = None,
                       drop_ema: bool = False, overwrite: bool = False) -> Path:
    """Copy ``source`` to ``target`` (.safetensors); tensors stay bit-identical unless cast by ``dtype``."""
    src, dst = Path(source), Path(target)
    if dst.suffix.lower() != ".safetensors":
        raise BoothError(f"Output {dst} must end in .safetensors (pickled formats are never written).")
    if dst.exists() and not overwrite:
        raise BoothError(f"Output {dst} already exists; choose another name or pass --overwrite.")
    if same_file(dst, src):
        raise BoothError("Output and input are the same file; choose another output name.")
    check_output_file(dst)
    tensors, metadata = load_tensors(src)
    detect(tensors, str(src), metadata)  # refuse LoRAs, VAEs and unsupported families with a clear message
    if drop_ema:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("model_ema.")}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return save_tensors(tensors, dst, metadata)
