"""Encode every training image and caption once, and keep the latents on disk for the next run.

The VAE and (frozen) text encoders are only needed to turn images and captions into tensors; doing
that once up front lets them leave the device for the whole run, which is most of the memory
saving that makes 8-12 GB GPUs usable. Latents are stored per image, keyed by a hash of the exact
pixels fed to the VAE (so content, resolution, crop and flip are all part of the key) and of the
VAE's weights, so a changed image or a different VAE never reuses a stale latent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..checkpoint.components import SDComponents
from ..checkpoint.conditioning import Conditioning, encode_prompts
from ..files import load_tensors, save_tensors
from .runtime import on_device

_SAMPLES_PER_TENSOR = 4096


def fingerprint(*modules: torch.nn.Module) -> str:
    """A short identity of modules' weights: names, shapes, dtypes and an even sample of every tensor.

    Sampling keeps this fast for multi-GB models while any real fine-tune (which moves every
    weight) or a different model still changes it.
    """
    digest = hashlib.blake2b(digest_size=12)
    for module in modules:
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            stride = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
            sample = flat[::stride].to("cpu", torch.float32).contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def _latent_key(pixels: torch.Tensor, vae_id: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{vae_id}:{tuple(pixels.shape)}".encode())
    digest.update(pixels.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class LatentEncoder:
    """Pixels -> latent (scaled, float32, CPU, CHW), from the disk cache when it has it.

    Images are handled one at a time, so hundreds of high-resolution crops never sit in memory as
    pixels. The VAE (float32 by now: SDXL's overflows in fp16) goes to ``device`` at the first
    cache miss only, and back by :meth:`close`. The distribution's mean is used, so a cached latent
    is exactly what a fresh encode would give.
    """

    def __init__(self, vae, folder: str | Path, vae_id: str, device: torch.device) -> None:
        self.vae, self.folder, self.vae_id, self.device = vae, Path(folder), vae_id, device
        self.encoded = 0  # cache misses so far
        self.last_key = ""
        self._home: torch.device | None = None

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.last_key = _latent_key(pixels, self.vae_id)  # names the exact pixels (see identity.py)
        file = self.folder / f"{self.last_key}.safetensors"
        if file.is_file():
            return load_tensors(file)[0]["latent"]
        weight = next(self.vae.parameters())
        if self._home is None:
            self._home = weight.device
            self.vae.to(self.device)
        config = self.vae.config
        shift = getattr(config, "shift_factor", None) or 0.0
        batch = pixels.unsqueeze(0).to(device=self.device, dtype=torch.float32)  # the VAE computes in float32
        latent = ((self.vae.encode(batch).latent_dist.mean - shift) * config.scaling_factor)[0].float().cpu()
        save_tensors({"latent": latent}, file, {"vae": self.vae_id})
        self.encoded += 1
        return latent

    def close(self) -> None:
        if self._home is not None:
            self.vae.to(self._home)
            self._home = None


@torch.no_grad()
def encode_captions(components: SDComponents, captions: list[str], device: torch.device) -> dict[str, Conditioning]:
    """Each distinct caption encoded once with the frozen text encoder(s); results kept on the CPU.

    The encoders visit ``device`` only for this and go back where they were.
    """
    unique = list(dict.fromkeys(captions))
    with on_device(components.text_encoders, device):
        encoded = [encode_prompts(components, [caption]).to("cpu", torch.float32) for caption in unique]
    return dict(zip(unique, encoded))
