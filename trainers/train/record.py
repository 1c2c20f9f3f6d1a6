"""What a run leaves behind besides the weights: its result object, loss log, plot and metadata.

Every output records how it was made: the LoRA's metadata carries the full resolved config as
YAML plus the kohya ``ss_*`` keys other tools display, so a file found months later can be
reproduced or compared.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint.components import SDComponents
from ..config import TrainConfig, dump_config
from ..files import atomic_write_text

LOSS_COLUMNS = ("step", "loss", "instance_loss", "prior_loss", "lr")


@dataclass
class TrainResult:
    """``components`` still carry the trained adapter (or weights), ready to sample from.

    ``seconds`` and ``peak_memory_bytes`` cover the whole call (loading, class images, encoding,
    steps, saving); peak memory is CUDA's max allocated on a GPU, the process's peak RSS on a CPU.
    ``steps`` counts from the start of training, including steps done before a resume.
    ``output`` is None when the run was stopped before its first step (nothing was written).
    """

    output: Path | None
    losses: list[float]
    steps: int
    seconds: float
    peak_memory_bytes: int
    components: SDComponents
    samples: list[Path] = field(default_factory=list)
    stopped: bool = False
    state: Path | None = None
    config: TrainConfig | None = None  # resolved: every default filled in
    history: list[dict] = field(default_factory=list)  # per step: loss, instance_loss, prior_loss, lr
    class_images: Path | None = None
    class_images_generated: int = 0
    snapshots: list[Path] = field(default_factory=list)  # LoRA files written at each save_every step


def snapshot_path(config: TrainConfig, step: int) -> Path:
    """``<output_dir>/snapshots/<output name>-step000100.safetensors``."""
    return Path(config.output_dir) / "snapshots" / f"{Path(config.output).stem}-step{step:06d}.safetensors"


def write_loss_log(history: list[dict], output_dir: Path) -> tuple[Path, Path | None]:
    """losses.csv (one row per optimiser step) and loss.png; the plot is skipped if nothing was trained."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOSS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row.get(k, "") for k in LOSS_COLUMNS} for row in history)
    table = atomic_write_text(output_dir / "losses.csv", buffer.getvalue())
    if not history:
        return table, None
    from ..plots import loss_plot

    series = {"loss": [row["loss"] for row in history]}
    if any(row.get("prior_loss") for row in history):  # with prior preservation, show both halves too
        series["instance"] = [row["instance_loss"] for row in history]
        series["prior (class images)"] = [row["prior_loss"] for row in history]
    plot = output_dir / "loss.png"
    loss_plot(series, plot)
    return table, plot


def training_metadata(config: TrainConfig, *, steps_done: int, seconds: float, peak_memory: int,
                      num_class_images: int, started_at: float, captions: list[str]) -> dict[str, str]:
    """Booth's own keys plus the kohya ``ss_*`` training keys (values are strings, as safetensors requires).

    ``captions``: one per instance image."""
    frequency = {}
    for caption in captions:
        frequency[caption] = frequency.get(caption, 0) + 1
    res = config.data.resolution
    trains_text = (config.dreambooth.train_text_encoder_steps > 0 if config.method == "dreambooth"
                   else config.lora.text_encoder)
    meta = {
        "booth.config": dump_config(config),
        "booth.method": config.method,
        "booth.steps": str(steps_done),
        "booth.resolution": str(res),
        "booth.instance_prompt": config.instance_prompt,
        "booth.class_prompt": config.prior.class_prompt if config.prior.enabled else "",
        "booth.seed": str(config.seed),
        "booth.training_seconds": f"{seconds:.2f}",
        "booth.peak_memory_bytes": str(peak_memory),
        "booth.versions": json.dumps({"torch": torch.__version__, "python": platform.python_version(),
                                      **_library_versions()}),
        "ss_training_started_at": f"{started_at:.0f}",
        "ss_training_finished_at": f"{time.time():.0f}",
        "ss_steps": str(steps_done),
        "ss_max_train_steps": str(config.steps),
        "ss_resolution": f"({res}, {res})",
        "ss_seed": str(config.seed),
        "ss_learning_rate": str(config.learning_rate),
        "ss_unet_lr": str(config.learning_rate),
        "ss_text_encoder_lr": str(config.text_encoder_lr if trains_text else 0),
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_lr_warmup_steps": str(config.warmup_steps),
        "ss_optimizer": config.optimizer,
        "ss_batch_size_per_device": str(config.batch_size),
        "ss_gradient_accumulation_steps": str(config.gradient_accumulation),
        "ss_gradient_checkpointing": str(config.gradient_checkpointing),
        "ss_mixed_precision": config.mixed_precision,
        "ss_min_snr_gamma": str(config.min_snr_gamma),
        "ss_noise_offset": str(config.noise_offset),
        "ss_max_grad_norm": str(config.max_grad_norm),
        "ss_prior_loss_weight": str(config.prior.loss_weight if config.prior.enabled else 0),
        "ss_num_train_images": str(len(captions)),
        "ss_num_reg_images": str(num_class_images),
        "ss_flip_aug": str(config.data.flip),
        "ss_enable_bucket": str(config.data.buckets),
        "ss_sd_model_name": Path(config.base).name if config.base else "",
        "ss_output_name": Path(config.output).stem,
        "ss_tag_frequency": json.dumps({"instance": frequency}),
    }
    return meta


def _library_versions() -> dict[str, str]:
    import diffusers
    import peft
    import transformers

    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
