"""Pre-train the toy-world text-to-image model from a seed: VAE first, then UNet and text encoder together.

The result is an ordinary single-file SD1.5-layout checkpoint of the ``toy`` variant (see
trainers/checkpoint/configs/sd15_toy.json), so fine-tuning, merging, sampling and the LoRA writers run on
the very code paths a real checkpoint takes. Each stage writes its result into the work folder and
is skipped when that file is already there, so a stopped pre-training continues where it stopped.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint.components import SDComponents
from ..checkpoint.test_models import build_random_components
from ..checkpoint.conditioning import encode_prompts, predict_noise
from ..checkpoint.writer import save_checkpoint
from ..files import atomic_write_text, load_tensors, save_tensors
from ..train.noise import diffusion_loss, sample_noise, sample_timesteps, training_target
from . import CHECKPOINT_NAME, JUDGE_NAME
from .settings import PretrainSettings
from .world import (BACKGROUNDS, COLOURS, SHAPES, SIZE, Scene, patterned_scene, pixels, random_scene, render,
                    training_caption)

VARIANT = "toy"
LOG_VARIANCE = -30.0  # the encoder's fixed log-variance: a spread of 3e-7, so latents are the means
LATENT_STD = 1 / 0.18215  # SD's scaling factor: the VAE is rescaled so that scaled latents have unit spread


Log = Callable[[str], None]


def _cosine(step: int, steps: int, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_vae(vae: torch.nn.Module, settings: PretrainSettings, log: Log) -> None:
    """Reconstruction (L1 + L2) on world pictures and on shapes in colours the world never names, so that
    unseen subjects survive the encode-decode round trip.

    The encoder is made deterministic (its log-variance output fixed at a negligible spread): sampling
    noise early in training slowed convergence several-fold, and a toy world needs no generative VAE prior.
    A faint penalty on the latents' size stands in for the KL term, keeping them bounded."""
    rng = random.Random(settings.seed)
    channels = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[channels:] = 0
        vae.quant_conv.bias[channels:] = LOG_VARIANCE
    vae.train().requires_grad_(True)
    vae.quant_conv.requires_grad_(False)  # the mean half is rescaled afterwards; a 1x1 mixing adds nothing
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, settings.vae_steps))
    for step in range(settings.vae_steps):
        scenes = [patterned_scene(rng) if rng.random() < 0.3 else random_scene(rng) for _ in range(settings.vae_batch)]
        target = pixels([render(scene, rng.randrange(1 << 30)) for scene in scenes])
        latents = vae.encode(target).latent_dist.mean
        error = vae.decode(latents).sample - target
        loss = error.abs().mean() + error.pow(2).mean() + 1e-4 * latents.pow(2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == settings.vae_steps - 1:
            log(f"vae step {step}/{settings.vae_steps}: L1 {float(error.detach().abs().mean()):.4f}")
    vae.eval().requires_grad_(False)


@torch.no_grad()
def rescale_latents(vae: torch.nn.Module, images: torch.Tensor) -> float:
    """Fold a constant into quant_conv / post_quant_conv so that latents times SD's scaling factor have
    unit spread: the decoder sees exactly the same numbers, the diffusion model sees well-scaled ones."""
    spread = float(vae.encode(images).latent_dist.mean.std())
    k = LATENT_STD / spread
    channels = vae.config.latent_channels
    vae.quant_conv.weight[:channels] *= k
    vae.quant_conv.bias[:channels] *= k
    vae.quant_conv.bias[channels:] += 2 * math.log(k)
    vae.post_quant_conv.weight /= k
    return k


@torch.no_grad()
def encode_world(vae: torch.nn.Module, settings: PretrainSettings, log: Log) -> tuple[torch.Tensor, list]:
    """Mean and log-variance latents of ``latent_images`` world pictures, with the scenes they show."""
    rng = random.Random(settings.seed + 1)
    scenes = [random_scene(rng) for _ in range(settings.latent_images)]
    parts = []
    for start in range(0, len(scenes), 64):
        images = pixels([render(scene, start + i) for i, scene in enumerate(scenes[start:start + 64])])
        parts.append(vae.encode(images).latent_dist.parameters)
        if start % 3200 == 0:
            log(f"encoded {start}/{len(scenes)} world pictures")
    return torch.cat(parts), scenes


def train_generator(components: SDComponents, latents: torch.Tensor, scenes: list, settings: PretrainSettings,
                    log: Log) -> None:
    """The SD objective (epsilon prediction on the family's noise schedule) for UNet and text encoder at once,
    with an exponential moving average of the UNet that becomes the saved weights."""
    rng = random.Random(settings.seed + 2)
    generator = torch.Generator().manual_seed(settings.seed + 2)
    unet, encoder = components.unet, components.text_encoders[0]
    modules = [unet, encoder]
    for module in modules:
        module.train().requires_grad_(True)
    params = [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, settings.generator_steps))
    average = [p.detach().clone() for p in params]
    channels = components.vae.config.latent_channels
    scale = components.vae.config.scaling_factor
    for step in range(settings.generator_steps):
        rows = [rng.randrange(len(scenes)) for _ in range(settings.generator_batch)]
        moments = latents[rows]
        mean, logvar = moments[:, :channels], moments[:, channels:]
        clean = (mean + torch.randn(mean.shape, generator=generator) * (0.5 * logvar).exp()) * scale
        prompts = ["" if rng.random() < settings.empty_caption_rate else training_caption(scenes[r], rng) for r in rows]
        noise = sample_noise(clean, generator)
        timesteps = sample_timesteps(len(rows), components.scheduler, generator)
        noisy = components.scheduler.add_noise(clean, noise, timesteps)
        prediction = predict_noise(components, noisy, timesteps, encode_prompts(components, prompts), (SIZE, SIZE))
        loss = diffusion_loss(prediction, training_target(components.scheduler, clean, noise, timesteps))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        decay = min(0.998, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(average, [p.detach() for p in params], 1 - decay)
        if step % 50 == 0 or step == settings.generator_steps - 1:
            log(f"generator step {step}/{settings.generator_steps}: loss {float(loss):.4f}")
    with torch.no_grad():
        for param, value in zip(params, average):
            param.copy_(value)
    for module in modules:
        module.eval().requires_grad_(False)


def toy_components(seed: int) -> SDComponents:
    """Freshly initialised components of the toy variant (the starting point of pre-training)."""
    return build_random_components("sd15", variant=VARIANT, seed=seed)


def pretrain_world(out_dir: str | Path, settings: PretrainSettings, log: Log = print) -> dict:
    """The judge, the text-to-image model and a report of both one's accuracy, in ``out_dir``
    (its ``work`` subfolder keeps finished stages, so a stopped run continues)."""
    from ..evaluate.models import load_clip
    from ..checkpoint.loader import load_components
    from .judges import judge_accuracy, prompt_following, save_judge, train_clip_judge

    out = Path(out_dir)
    judge_dir = out / JUDGE_NAME
    if not (judge_dir / "config.json").exists():
        save_judge(train_clip_judge(settings.judge_steps, settings.judge_batch, settings.seed, log)[0], judge_dir)
    checkpoint = out / CHECKPOINT_NAME
    if not checkpoint.exists():
        pretrain(checkpoint, out / "work", settings, log)
    judge = load_clip(judge_dir)
    report = {"settings": settings.__dict__, "judge_zero_shot_accuracy": judge_accuracy(judge, seed=settings.seed),
              "prompt_following": prompt_following(load_components(checkpoint), judge, seed=settings.seed),
              "chance": {"shape": 1 / len(SHAPES), "colour": 1 / len(COLOURS), "background": 1 / len(BACKGROUNDS)}}
    atomic_write_text(out / "pretrain_report.json", json.dumps(report, indent=1))
    log(f"judge accuracy {report['judge_zero_shot_accuracy']}; prompt following {report['prompt_following']}")
    return report


def pretrain(out: str | Path, work_dir: str | Path, settings: PretrainSettings, log: Log = print) -> Path:
    """The text-to-image model; returns the written checkpoint. Stages already in ``work_dir`` are reused."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    components = toy_components(settings.seed)
    # finished stages are kept under names that say how they were made, so changed settings redo them
    vae_file = work / f"vae_seed{settings.seed}_{settings.vae_steps}steps.safetensors"
    if vae_file.exists():
        components.vae.load_state_dict(load_tensors(vae_file)[0])
    else:
        train_vae(components.vae, settings, log)
        rng = random.Random(settings.seed + 3)
        sample = pixels([render(random_scene(rng), i) for i in range(256)])
        log(f"latent rescale factor {rescale_latents(components.vae, sample):.3f}")
        save_tensors(components.vae.state_dict(), vae_file)
    latents_file = vae_file.with_name(f"{vae_file.stem}_latents{settings.latent_images}.pt")
    latents, scenes = encode_world(components.vae, settings, log) if not latents_file.exists() else (None, None)
    if latents is not None:
        torch.save({"latents": latents, "scenes": [scene.__dict__ for scene in scenes]}, latents_file)
    else:
        saved = torch.load(latents_file, weights_only=True)
        latents, scenes = saved["latents"], [Scene(**scene) for scene in saved["scenes"]]
    train_generator(components, latents, scenes, settings, log)
    return save_checkpoint(components, out, dtype=torch.float16, metadata={
        "booth.toy_world": f"pre-trained on the toy world, seed {settings.seed}",
        "booth.pretrain_settings": str(settings.__dict__)})

