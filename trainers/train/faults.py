"""Running out of memory (GPU or CPU), turned into advice and memory handed back.

A raw CUDA out-of-memory error tells the user nothing they can act on, and inside ComfyUI the
failed step's activations would stay referenced by the error's traceback, so every later workflow
would start short of memory. Here the traceback's frames are dropped, the CUDA cache is emptied,
and the user gets a :class:`BoothError` listing the settings that lower memory, skipping the ones
already in use.
"""

from __future__ import annotations

import gc

import torch

from ..config import TrainConfig
from ..errors import BoothError

# torch >= 2.5 names it at the top level; older releases (still shipped with some ComfyUI installs) only under cuda.
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# What torch's CPU allocator says when an allocation fails (Linux/macOS, Windows): a plain RuntimeError.
_CPU_OUT_OF_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")


def is_out_of_memory(error: BaseException | None) -> bool:
    """A CUDA or CPU allocation failure (or Python's MemoryError): the same advice fits all of them."""
    return isinstance(error, (OUT_OF_MEMORY, MemoryError)) or (
        isinstance(error, RuntimeError) and any(text in str(error) for text in _CPU_OUT_OF_MEMORY))


def out_of_memory_advice(config: TrainConfig, device: torch.device) -> "_OutOfMemoryAdvice":
    """Around a run: an out-of-memory error becomes a BoothError with advice, after memory is freed.

    The original error keeps its one-line description in the message but loses its traceback, so
    nothing the failed step allocated stays alive once the error has been handled.
    """
    return _OutOfMemoryAdvice(config, device)


class _OutOfMemoryAdvice:
    """A class rather than a generator context manager: ``__exit__`` must drop its own reference to
    the traceback (a generator's caller, contextlib, would keep one alive in the error it raises)."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, trace) -> bool:
        if not is_out_of_memory(error):
            return False
        detail = (str(error).strip().splitlines() or ["out of memory"])[0][:200]
        error.__traceback__ = None  # the failed step's frames, and the activations they hold, go with it
        del error, trace
        free_device_memory(self.device)
        raise BoothError(f"Out of memory on {self.device} ({detail}). To fit: "
                         f"{memory_advice(self.config, self.device)}. The memory this run held has been "
                         "released; state saved earlier, if any, is kept.")


def memory_advice(config: TrainConfig, device: torch.device) -> str:
    """What lowers memory, most effective first, leaving out what the config already does."""
    tips = []
    if not config.gradient_checkpointing:
        tips.append("set gradient_checkpointing=true")
    if config.batch_size > 1:
        tips.append(f"lower batch_size (now {config.batch_size}; raise gradient_accumulation to keep the "
                    "effective batch)")
    if config.data.resolution > 512:
        tips.append(f"lower data.resolution (now {config.data.resolution})")
    if device.type == "cuda" and config.optimizer == "adamw":
        tips.append("use optimizer=adamw8bit (needs bitsandbytes)")
    if device.type == "cuda" and config.mixed_precision == "no":
        tips.append("set mixed_precision=fp16 or bf16")
    if config.method != "dreambooth" and config.lora.rank > 8:
        tips.append(f"lower lora.rank (now {config.lora.rank})")
    if device.type == "cuda":
        tips.append("close other programs using the GPU")
    return "; ".join(tips)


def free_device_memory(device: torch.device) -> None:
    """Collect unreachable tensors and return CUDA's cached blocks to the driver."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
