"""Build empty diffusers/transformers modules for an architecture config."""

from __future__ import annotations

import contextlib

import torch


def _empty_weights(empty: bool):
    if not empty:
        return contextlib.nullcontext()
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)  # buffers (e.g. position ids) stay real


def make_unet(config: dict, empty: bool = False):
    from diffusers import UNet2DConditionModel

    with _empty_weights(empty):
        return UNet2DConditionModel(**config)


def make_vae(config: dict, empty: bool = False):
    from diffusers import AutoencoderKL

    with _empty_weights(empty):
        return AutoencoderKL(**config)


def make_text_encoder(config: dict, with_projection: bool, empty: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with _empty_weights(empty):
        return cls(CLIPTextConfig(**config))


def make_scheduler(config: dict, prediction_type: str):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(dict(config, prediction_type=prediction_type))


def state_keys(module: torch.nn.Module) -> list[str]:
    return list(module.state_dict().keys())
