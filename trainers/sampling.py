"""Text-to-image generation with loaded :class:`SDComponents` (class images, previews, comparisons).

The denoising loop is written here on top of diffusers schedulers instead of a diffusers pipeline,
so it works on the very modules being trained (with their LoRA layers, devices and dtypes), uses
the same prompt conditioning as training, and keeps memory in our hands: latents stay float32
for the scheduler maths and the VAE decodes one image at a time, the usual peak for large images.

Every image's starting noise comes from its own generator seeded with ``seed + index``, so image
``i`` is the same whatever the batch size, and a later call with ``seed + n`` continues a sequence.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from PIL import Image

from .checkpoint.components import SDComponents
from .checkpoint.conditioning import Conditioning, encode_prompts, predict_noise
from .errors import BoothError
from .files import atomic_write

SCHEDULERS = ("ddim", "euler", "dpm++")
_LATENT_CHANNELS = 4


class GenerationStopped(BoothError):
    """``should_stop`` asked generation to end before every image was made."""


@dataclass
class SampleSettings:
    """How to sample. ``height``/``width`` of None take the model's native resolution."""

    steps: int = 30
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    negative_prompt: str = ""
    scheduler: str = "ddim"

    def check(self) -> None:
        """Raise a :class:`BoothError` naming the first setting that cannot work."""
        if not isinstance(self.steps, int) or self.steps < 1:
            raise BoothError(f"Sampling steps is {self.steps!r}; it must be a whole number of at least 1.")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise BoothError(f"Sampling guidance_scale is {self.guidance_scale}; it must be 0 or more "
                             "(1 turns classifier-free guidance off, 5-9 is usual).")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 8 or value % 8):
                raise BoothError(f"Sampling {name} is {value!r}; it must be a positive multiple of 8 "
                                 "(e.g. 512 for SD1.5, 1024 for SDXL).")
        if self.scheduler not in SCHEDULERS:
            raise BoothError(f"Sampling scheduler {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}.")

    @property
    def guided(self) -> bool:
        """Classifier-free guidance at scale 1 equals the plain conditional prediction: skip the extra pass."""
        return self.guidance_scale != 1.0


def _parameter(module: torch.nn.Module) -> torch.nn.Parameter:
    return next(module.parameters())


def vae_scale_factor(components: SDComponents) -> int:
    """Pixels per latent cell (8 for every supported family)."""
    return 2 ** (len(components.vae.config.block_out_channels) - 1)


def native_resolution(components: SDComponents) -> int:
    """The square size the UNet was built for (its latent sample size times the VAE factor)."""
    return int(components.unet.config.sample_size) * vae_scale_factor(components)


def make_sampler(components: SDComponents, name: str):
    """A fresh inference scheduler sharing the model's noise schedule and prediction type."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    classes = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm++": DPMSolverMultistepScheduler}
    if name not in classes:
        raise BoothError(f"Sampling scheduler {name!r} is not one of {', '.join(SCHEDULERS)}.")
    return classes[name].from_config(components.scheduler.config)


@contextlib.contextmanager
def _eval_mode(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Sample without dropout even mid-training, then restore every submodule's previous mode."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def initial_noise(seed: int, count: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Float32 CPU noise, image ``i`` from a generator seeded ``seed + i`` (same on every device)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(count)])


def _encode(components: SDComponents, prompts: list[str], negative: str, guided: bool) -> Conditioning:
    """Conditioning for the UNet: [negative..., positive...] when guided, else positive only.

    An empty negative prompt is encoded like any other text, as ComfyUI does, so previews match what
    users see there (diffusers' SDXL pipeline would substitute zeros instead).
    """
    unet = _parameter(components.unet)
    texts = [negative] * len(prompts) + prompts if guided else prompts
    return encode_prompts(components, texts).to(unet.device, unet.dtype)


def _denoise(components: SDComponents, latents: torch.Tensor, cond: Conditioning, settings: SampleSettings,
             pixel_size: tuple[int, int], on_step: Callable[[], None]) -> torch.Tensor:
    unet = _parameter(components.unet)
    sampler = make_sampler(components, settings.scheduler)
    sampler.set_timesteps(settings.steps, device=unet.device)
    latents = latents.to(unet.device) * sampler.init_noise_sigma
    quiet = torch.Generator().manual_seed(0)  # keeps stochastic scheduler branches off the global RNG
    for t in sampler.timesteps:
        model_input = sampler.scale_model_input(torch.cat([latents, latents]) if settings.guided else latents, t)
        output = predict_noise(components, model_input.to(unet.dtype), t, cond, pixel_size).float()
        if settings.guided:
            negative, positive = output.chunk(2)
            output = negative + settings.guidance_scale * (positive - negative)
        latents = sampler.step(output, t, latents, generator=quiet, return_dict=False)[0]
        on_step()
    return latents


def _decode_one(vae: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
    weight = _parameter(vae)
    return vae.decode(latent.to(weight.device, weight.dtype), return_dict=False)[0].float()


def decode_latents(components: SDComponents, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> BHWC float images in [0, 1] on the CPU, one VAE call per image.

    An fp16 VAE (notably SDXL's) can overflow to inf/NaN; such an image is decoded again with the
    VAE temporarily in float32 rather than returned black.
    """
    vae = components.vae
    scaled = latents.float() / vae.config.scaling_factor
    images = []
    for latent in scaled.split(1):
        image = _decode_one(vae, latent)
        if not torch.isfinite(image).all() and _parameter(vae).dtype == torch.float16:
            try:
                vae.to(torch.float32)
                image = _decode_one(vae, latent)
            finally:
                vae.to(torch.float16)
        images.append((image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu())
    return torch.cat(images)


def generate(components: SDComponents, prompts: list[str], *, seed: int, settings: SampleSettings | None = None,
             batch_size: int = 4, progress: Callable[[int, int], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Images for ``prompts`` as a BHWC float tensor in [0, 1] on the CPU (ComfyUI's IMAGE layout).

    ``progress(done, total)`` is called after every denoising step (total = steps x batches);
    ``should_stop()`` is polled before each step and raises :class:`GenerationStopped` when true.
    """
    settings = settings or SampleSettings()
    settings.check()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BoothError(f"Sampling batch_size is {batch_size!r}; it must be at least 1.")
    factor = vae_scale_factor(components)
    height = settings.height or native_resolution(components)
    width = settings.width or native_resolution(components)
    latent_shape = (_LATENT_CHANNELS, height // factor, width // factor)
    if not prompts:
        return torch.zeros(0, height, width, 3)
    total = settings.steps * math.ceil(len(prompts) / batch_size)
    done = 0

    def on_step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)
        if should_stop is not None and done < total and should_stop():
            raise GenerationStopped(f"Image generation was stopped after {done} of {total} steps.")

    if should_stop is not None and should_stop():
        raise GenerationStopped(f"Image generation was stopped before it started ({total} steps planned).")
    images = []
    with torch.inference_mode(), _eval_mode([components.unet, components.vae, *components.text_encoders]):
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start:start + batch_size])
            cond = _encode(components, batch, settings.negative_prompt, settings.guided)
            noise = initial_noise(seed + start, len(batch), latent_shape)
            latents = _denoise(components, noise, cond, settings, (height, width), on_step)
            images.append(decode_latents(components, latents))
    return torch.cat(images)


def to_pil(images: torch.Tensor | list[Image.Image]) -> list[Image.Image]:
    """BHWC (or one HWC) float images in [0, 1] -> 8-bit RGB PIL images; PIL images pass through."""
    if isinstance(images, list) and all(isinstance(image, Image.Image) for image in images):
        return [image.convert("RGB") for image in images]
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4) or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise BoothError(f"Expected images as a [batch, height, width, channels] tensor or PIL images, got {shape}.")
    batch = images[None] if images.ndim == 3 else images
    array = (batch.detach().float().nan_to_num(0.0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return [Image.fromarray(item[..., :3] if item.shape[-1] != 1 else item[..., 0]).convert("RGB") for item in array]


def save_images(images: torch.Tensor | list[Image.Image], folder: str | os.PathLike, stem: str) -> list[Path]:
    """Write ``<stem>_000.png``, ``<stem>_001.png``... into ``folder`` atomically; return their paths."""
    pictures = to_pil(images)
    digits = max(3, len(str(len(pictures) - 1)))
    paths = []
    for index, picture in enumerate(pictures):
        target = Path(folder) / f"{stem}_{index:0{digits}d}.png"
        paths.append(atomic_write(target, lambda tmp, p=picture: p.save(tmp, format="PNG")))
    return paths
