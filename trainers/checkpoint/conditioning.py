"""Prompt -> UNet conditioning, the way each family was trained.

SD1.x uses CLIP-L's last layer; SD2.x the penultimate OpenCLIP layer through the final norm;
SDXL the penultimate layers of both encoders side by side plus OpenCLIP's pooled projection and
the size/crop "time ids". Keeping this in one place makes training, sampling and evaluation agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .components import SDComponents


@dataclass
class Conditioning:
    """Text conditioning for a batch: ``context`` for cross-attention, ``pooled`` for SDXL only."""

    context: torch.Tensor
    pooled: torch.Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Conditioning":
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return Conditioning(move(self.context), move(self.pooled))

    def index(self, rows: torch.Tensor | list[int]) -> "Conditioning":
        return Conditioning(self.context[rows], None if self.pooled is None else self.pooled[rows])

    @staticmethod
    def cat(parts: list["Conditioning"]) -> "Conditioning":
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return Conditioning(torch.cat([p.context for p in parts]), pooled)


def tokenize(tokenizer, prompts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """77-token ids, truncated like every SD front end does."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def _final_norm(encoder) -> torch.nn.Module:
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm


def encode_prompts(components: SDComponents, prompts: list[str]) -> Conditioning:
    """Encode ``prompts`` with the components' text encoder(s); gradients flow if they are trainable."""
    family = components.family
    device = next(components.text_encoders[0].parameters()).device
    if family == "sd15":
        encoder = components.text_encoders[0]
        return Conditioning(encoder(tokenize(components.tokenizers[0], prompts, device)).last_hidden_state)
    if family == "sd2":
        encoder = components.text_encoders[0]
        out = encoder(tokenize(components.tokenizers[0], prompts, device), output_hidden_states=True)
        return Conditioning(_final_norm(encoder)(out.hidden_states[-2]))
    first, second = components.text_encoders
    out1 = first(tokenize(components.tokenizers[0], prompts, device), output_hidden_states=True)
    out2 = second(tokenize(components.tokenizers[1], prompts, device), output_hidden_states=True)
    context = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2].to(out1.hidden_states[-2].dtype)], dim=-1)
    return Conditioning(context, out2.text_embeds)


def unet_added_conditions(components: SDComponents, cond: Conditioning, height: int, width: int) -> dict | None:
    """SDXL's ``added_cond_kwargs`` (pooled text + original size, crop, target size); None otherwise."""
    if components.family != "sdxl":
        return None
    batch = cond.context.shape[0]
    time_ids = torch.tensor([height, width, 0, 0, height, width], dtype=cond.context.dtype,
                            device=cond.context.device).repeat(batch, 1)
    return {"text_embeds": cond.pooled, "time_ids": time_ids}


def predict_noise(components: SDComponents, latents: torch.Tensor, timesteps: torch.Tensor,
                  cond: Conditioning, pixel_size: tuple[int, int]) -> torch.Tensor:
    """One UNet call with the family's conditioning; returns the model output (eps or v)."""
    added = unet_added_conditions(components, cond, *pixel_size)
    return components.unet(latents, timesteps, encoder_hidden_states=cond.context,
                           added_cond_kwargs=added, return_dict=False)[0]
