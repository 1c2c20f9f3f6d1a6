"""How much arithmetic a training step is, and how fast this machine can do arithmetic at all.

``GFLOP per step / seconds per step`` says how well a trainer uses the hardware; dividing by a
matrix-multiply rate measured on the same machine, in the same run, turns that into a share of
what is attainable, which stays meaningful on a shared machine whose speed drifts.
"""

from __future__ import annotations

import time

import torch

from ..checkpoint.families import architecture, detect
from ..checkpoint.inspect import LazySafetensors
from ..files import read_safetensors_header


def checkpoint_architecture(path: str) -> dict:
    """The architecture config of a .safetensors checkpoint, read from its header (no weights loaded)."""
    header, metadata = read_safetensors_header(path)
    detected = detect(LazySafetensors(path, header), str(path), metadata)  # type: ignore[arg-type]
    return architecture(detected.family, detected.variant)


def unet_forward_flops(config: dict, resolution: int, batch: int) -> int:
    """FLOPs of one UNet forward pass of architecture ``config``, counted on the meta device (no
    weights, no time)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..checkpoint.modules import make_unet

    side = resolution // 2 ** (len(config["vae"]["block_out_channels"]) - 1)
    context = sum(encoder["hidden_size"] for encoder in config["text_encoders"])
    with torch.device("meta"):
        unet = make_unet(config["unet"])
        latents = torch.zeros(batch, config["unet"]["in_channels"], side, side)
        timesteps = torch.zeros(batch, dtype=torch.long)
        text = torch.zeros(batch, 77, context)
        added = _sdxl_added_conditions(config, batch)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(latents, timesteps, encoder_hidden_states=text, added_cond_kwargs=added, return_dict=False)
    return int(counter.get_total_flops())


def _sdxl_added_conditions(config: dict, batch: int) -> dict | None:
    if config["unet"].get("addition_embed_type") != "text_time":
        return None
    pooled = config["text_encoders"][-1].get("projection_dim", config["text_encoders"][-1]["hidden_size"])
    return {"text_embeds": torch.zeros(batch, pooled), "time_ids": torch.zeros(batch, 6)}


def training_step_flops(forward_flops: int, trains_base_weights: bool) -> int:
    """A backward pass costs one forward for the activations' gradients, plus one more for the weights'
    gradients when the weights themselves train (a LoRA's own gradients are negligible)."""
    return forward_flops * (3 if trains_base_weights else 2)


def matmul_peak_gflops(size: int = 2048, seconds: float = 2.0) -> float:
    """The best float32 matrix-multiply rate seen over ``seconds``, on the GPU if there is one
    (where training runs), else on the CPU with torch's threads."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    _timed_mm(a, b)  # the first call pays for thread-pool / kernel start-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        best = max(best, 2 * size ** 3 / _timed_mm(a, b) / 1e9)
    return best


def _timed_mm(a: torch.Tensor, b: torch.Tensor) -> float:
    start = time.perf_counter()
    torch.mm(a, b)
    if a.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start
