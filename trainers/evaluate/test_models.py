"""Tiny random-weight judge models (CLIP, DINOv2) written as Hugging Face folders.

Nothing can be downloaded, so the demo and the tests make their own judges to run a comparison end
to end. Their scores are numbers from random weights: they exercise the plumbing, not quality.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_IMAGE_SIZE = 32  # the tiny judges' input size: small enough to score in milliseconds on a CPU


def make_test_clip(folder: str | Path, *, image_size: int = TINY_IMAGE_SIZE, seed: int = 0) -> Path:
    """A full CLIP (text and vision towers) with random weights, saved as ``folder``."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    tower = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(text_config=dict(tower, max_position_embeddings=77),
                        vision_config=dict(tower, image_size=image_size, patch_size=8), projection_dim=16)
    CLIPModel(config).eval().save_pretrained(folder)
    return Path(folder)


def make_test_dino(folder: str | Path, *, image_size: int = TINY_IMAGE_SIZE, seed: int = 1) -> Path:
    """A DINOv2 ViT with random weights, saved as ``folder``."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                             image_size=image_size, patch_size=8)).save_pretrained(folder)
    return Path(folder)
