"""The diffusion training objective: timesteps, noise, what the UNet must predict, and loss weights.

Random numbers come from an explicit CPU ``torch.Generator`` and are moved to the device afterwards,
so a seed gives the same noise on CPU and GPU and a resumed run can replay it exactly.
"""

from __future__ import annotations

import torch


def sample_timesteps(batch: int, scheduler, generator: torch.Generator) -> torch.Tensor:
    """Uniform training timesteps in [0, num_train_timesteps)."""
    return torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)


def sample_noise(like: torch.Tensor, generator: torch.Generator, offset: float = 0.0) -> torch.Tensor:
    """Gaussian noise shaped like ``like``; ``offset`` adds a per-channel constant so the model can
    learn to change an image's overall brightness (plain noise has almost no zero-frequency part)."""
    noise = torch.randn(like.shape, generator=generator, dtype=torch.float32)
    if offset:
        noise = noise + offset * torch.randn((like.shape[0], like.shape[1], 1, 1), generator=generator)
    return noise


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should output: the noise (epsilon models) or the velocity (v-prediction models)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction type {kind!r}")


def signal_to_noise(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas / (1.0 - alphas)


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor | None:
    """Min-SNR-gamma loss weights (Hang et al. 2023): stop easy, low-noise timesteps from dominating.

    For epsilon targets the weight is min(SNR, gamma) / SNR; for v targets min(SNR, gamma) / (SNR + 1),
    the same weighting expressed for the velocity objective. ``gamma`` 0 means unweighted (None).
    """
    if not gamma:
        return None
    snr = signal_to_noise(scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped / snr


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per sample (in float32), optionally weighted, averaged over the batch."""
    per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample.device)
    return per_sample.mean()
