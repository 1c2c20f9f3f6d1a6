"""The trainers the benchmark compares, each as the command line that runs it on the shared settings.

Each contender is run exactly as a user would run it (Booth's CLI, diffusers' example script,
ComfyUI's node), wrapped in ``step_clock.py`` so its optimiser steps are timed the same way.
Settings that every trainer has (resolution, batch size, rank, steps, learning rate, seed,
precision) are set to the same values; each keeps its own defaults for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

STEP_CLOCK = Path(__file__).with_name("step_clock.py")
COMFY_DRIVER = Path(__file__).resolve().parents[2] / "bench" / "comfy_train_lora.py"
PROMPT = "a photo of sks star"
_DIFFUSERS_PRECISION = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}


@dataclass
class Workload:
    """What every contender trains: the same model, images and settings."""

    base: Path  # single-file checkpoint (Booth, ComfyUI)
    images: Path
    method: str = "lora"  # "lora" or "dreambooth" (full UNet fine-tune)
    steps: int = 6
    resolution: int = 256
    batch_size: int = 1
    rank: int = 8
    learning_rate: float = 1e-4
    precision: str = "fp32"  # fp32 | fp16 | bf16 (half precisions need a GPU)
    seed: int = 0
    diffusers_model: Path | None = None  # diffusers-format folder of ``base`` (diffusers' scripts)
    booth_sets: list[str] = field(default_factory=list)  # extra Booth config overrides, name=value


@dataclass
class Contender:
    name: str
    command: list[str]  # what runs after ``python step_clock.py RECORD``
    python: str
    output: Path  # file or folder whose size is reported

    def argv(self, record: Path, profile: str | None = None) -> list[str]:
        """``profile``: ``AFTER:COUNT``, the steps ``step_clock.py`` runs the profiler over."""
        return [self.python, str(STEP_CLOCK), str(record), *(["--profile", profile] if profile else []), *self.command]


def booth(work: Workload, python: str, out: Path) -> Contender:
    output = out / f"booth_{work.method}.safetensors"
    sets = [f"batch_size={work.batch_size}", "prior.enabled=false", f"lora.alpha={work.rank}",
            f"mixed_precision={'no' if work.precision == 'fp32' else work.precision}", *work.booth_sets]
    command = ["-m", "trainers", "train", "--method", work.method, "--base", str(work.base),
               "--images", str(work.images), "--instance-prompt", PROMPT, "--steps", str(work.steps),
               "--resolution", str(work.resolution), "--rank", str(work.rank),
               "--learning-rate", str(work.learning_rate), "--seed", str(work.seed), "--out", str(output),
               "--output-dir", str(out), "--log-every", "1"]
    return Contender("booth", command + [arg for s in sets for arg in ("--set", s)], python, output)


def comfyui(work: Workload, comfy_root: Path, out: Path) -> Contender:
    """ComfyUI's built-in Train LoRA node (UNet only, every layer, alpha = 1), driven by bench/comfy_train_lora.py."""
    python = comfy_root / ".venv" / "bin" / "python"
    output = out / "comfyui_lora.safetensors"
    command = [str(COMFY_DRIVER), "--comfy-root", str(comfy_root), "--ckpt", str(work.base),
               "--images", str(work.images), "--prompt", PROMPT, "--steps", str(work.steps),
               "--rank", str(work.rank), "--batch-size", str(work.batch_size),
               "--learning-rate", str(work.learning_rate), "--seed", str(work.seed), "--out", str(output)]
    return Contender("comfyui", command, str(python if python.exists() else "python"), output)


def diffusers(work: Workload, source: Path, python: str, out: Path) -> Contender:
    """diffusers' examples/dreambooth/train_dreambooth_lora.py (LoRA) or train_dreambooth.py (full),
    no prior preservation, constant learning rate, no validation images."""
    script = "train_dreambooth_lora.py" if work.method == "lora" else "train_dreambooth.py"
    command = [str(source / "examples" / "dreambooth" / script),
               "--pretrained_model_name_or_path", str(work.diffusers_model), "--instance_data_dir", str(work.images),
               "--instance_prompt", PROMPT, "--output_dir", str(out), "--resolution", str(work.resolution),
               "--train_batch_size", str(work.batch_size), "--max_train_steps", str(work.steps),
               "--learning_rate", str(work.learning_rate), "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
               "--seed", str(work.seed), "--mixed_precision", _DIFFUSERS_PRECISION[work.precision],
               "--checkpointing_steps", str(10 ** 9), "--dataloader_num_workers", "0"]
    if work.method == "lora":
        command += ["--rank", str(work.rank)]
        output = out / "pytorch_lora_weights.safetensors"
    else:
        output = out
    return Contender(f"diffusers_{'lora' if work.method == 'lora' else 'full'}", command, python, output)
