"""The loaded parts of a Stable Diffusion model, as diffusers/transformers modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class SDComponents:
    """Everything a trainer needs from one checkpoint.

    ``text_encoders``/``tokenizers`` hold one entry for SD1.x/SD2.x and two for SDXL (CLIP-L then
    OpenCLIP-bigG). ``extra_state`` keeps original-layout tensors that have no home in the diffusers
    modules (e.g. OpenCLIP's ``logit_scale``) so writing the checkpoint back loses nothing.
    """

    family: str
    prediction_type: str
    unet: Any
    vae: Any
    text_encoders: list
    tokenizers: list
    scheduler: Any
    extra_state: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
