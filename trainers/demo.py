"""A complete DreamBooth-LoRA run on a fresh machine, offline, in a few minutes on a laptop CPU.

Nothing can be downloaded, so the demo runs in the toy world (trainers/toyworld): a small text-to-image
model pre-trained on coloured shapes and shipped with Booth, five pictures of a subject it has never
seen (a teal and magenta heart, "sks heart"), class images that model generates for prior
preservation, then training, the LoRA file, the loss curve, a base-vs-tuned grid (same prompts, same
seeds), a comparison report judged by a CLIP model trained on the same world, and a summary.json.
The toy world proves that training teaches the model the subject; it says nothing about how pictures
from a real Stable Diffusion checkpoint look.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .config import TrainConfig
from .files import atomic_write_text
from .progress import Progress
from .toyworld import DEMO_STEPS, TOY_CHECKPOINT
from .toyworld.subject import CLASS_PROMPT, EVALUATION_PROMPTS, INSTANCE_PROMPT, SUBJECT, write_instance_images

GRID_PROMPTS = (*EVALUATION_PROMPTS[:2], CLASS_PROMPT)
TOY_WORLD_NOTE = ("The models are the toy world's (trainers/toyworld): a small text-to-image model pre-trained on "
                  "coloured shapes and a CLIP judge trained on the same world. The scores show whether training "
                  "taught the model the subject; they say nothing about pictures from a real Stable Diffusion model.")


def demo_config(out_dir: Path, base: Path, images: Path, steps: int = DEMO_STEPS) -> TrainConfig:
    """DreamBooth-LoRA with prior preservation, sized for the toy model (64 px, about two minutes of one core).

    Chosen by measuring CLIP-I over three training seeds (docs/toyworld.md): min-SNR weighting (gamma 5)
    makes the run learn what the subject looks like (colours and outline, decided at the noisy timesteps)
    rather than mostly the fine texture the low-noise timesteps reward; a text-encoder LoRA gives the new
    word "sks" a meaning; batches of 4 steady a run on five pictures. Without any of the three, CLIP-I
    rose above the base model's in some seeds only.
    """
    config = TrainConfig(method="dreambooth_lora", base=str(base), images=str(images), instance_prompt=INSTANCE_PROMPT,
                         output=str(out_dir / "sks_heart_lora.safetensors"), output_dir=str(out_dir / "run"),
                         device="auto", seed=0, steps=steps, batch_size=4, learning_rate=3e-3,
                         save_every=max(1, steps // 2), min_snr_gamma=5.0)
    config.data.resolution = 64
    config.data.flip = True
    config.prior.class_prompt = CLASS_PROMPT
    config.prior.num_class_images = 10
    config.prior.generation_steps = 20
    config.lora.rank = 8
    config.lora.alpha = 8.0
    config.lora.unet_targets = ("attention", "conv")
    config.lora.text_encoder = True
    config.sample.every = max(1, steps // 2)
    config.sample.steps = 20
    config.sample.prompts = list(GRID_PROMPTS[:2])
    return config


def run_demo(out_dir: str | Path = "outputs/demo", steps: int = DEMO_STEPS, progress: Progress | None = None) -> dict:
    """Train the toy subject, compare base vs tuned; return (and write) the summary.

    Runs with one CPU thread: the toy model's tensors are so small that synchronising threads costs
    more than it saves. The caller's thread setting is restored afterwards.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_demo(Path(out_dir), steps, progress or Progress())
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, steps: int, progress: Progress) -> dict:
    from .checkpoint.loader import load_components
    from .lora import apply_lora, read_lora
    from .plots import image_grid
    from .sampling import SampleSettings, generate
    from .train import train

    started = time.perf_counter()
    images = write_instance_images(out / "images")
    progress.on_message(f"toy-world model: {TOY_CHECKPOINT}; {len(images)} pictures of '{SUBJECT}' in {images[0].parent}")
    result = train(demo_config(out, TOY_CHECKPOINT, images[0].parent, steps), progress)

    settings = SampleSettings(steps=25, guidance_scale=7.5)
    prompts = [prompt for prompt in GRID_PROMPTS for _ in range(2)]  # two seeds per prompt
    before = load_components(TOY_CHECKPOINT)
    base_images = generate(before, prompts, seed=0, settings=settings)
    apply_lora(before, read_lora(result.output))  # the saved file on a fresh base, as a user would load it
    tuned_images = generate(before, prompts, seed=0, settings=settings)
    enlarged = torch.nn.functional.interpolate(torch.cat([base_images, tuned_images]).permute(0, 3, 1, 2),
                                               scale_factor=3, mode="bicubic").clamp(0, 1).permute(0, 2, 3, 1)
    grid = out / "comparison.png"
    image_grid(enlarged, rows=2, cols=len(prompts), row_labels=["base", "base + LoRA"],
               col_labels=[p.removeprefix("a photo of ") for p in prompts], path=grid)

    comparison = compare_base_and_lora(out, result.output, images[0].parent, progress)
    losses = result.losses
    window = min(10, len(losses))
    summary = {
        "note": TOY_WORLD_NOTE,
        "method": result.config.method,
        "device": str(next(result.components.unet.parameters()).device),
        "steps": result.steps,
        "training_seconds": round(result.seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_measure": "torch.cuda.max_memory_allocated" if result.config.device != "cpu"
        and torch.cuda.is_available() else "peak resident set size of the process",
        "cpu_threads": torch.get_num_threads(),
        "lora_file": str(result.output),
        "lora_bytes": result.output.stat().st_size,
        "base_checkpoint": str(TOY_CHECKPOINT),
        "base_checkpoint_bytes": TOY_CHECKPOINT.stat().st_size,
        "instance_images": len(images),
        "class_images": result.config.prior.num_class_images,
        "class_images_generated": result.class_images_generated,
        "mean_loss_first_10": sum(losses[:window]) / window,
        "mean_loss_last_10": sum(losses[-window:]) / window,
        "mean_abs_pixel_change_base_vs_lora": float((tuned_images - base_images).abs().mean()),
        "scores": comparison["scores"],
        "loss_plot": str(Path(result.config.output_dir) / "loss.png"),
        "comparison_grid": str(grid),
        "compare_report": comparison["report"],
        "compare_config": str(out / "compare.yaml"),
        "samples": [str(p) for p in result.samples],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    progress.on_message(f"demo done in {summary['total_seconds']} s: {out / 'summary.json'}")
    return summary


def compare_base_and_lora(out: Path, lora: Path, images: Path, progress: Progress) -> dict:
    """Base vs base + LoRA through the comparison (``python -m trainers compare``), judged by the toy world's
    CLIP model; writes ``out/compare.yaml`` (rerun it with the CLI). Returns the report path and, per
    model, the mean scores."""
    from .evaluate.compare import run_compare
    from .evaluate.config import VariantConfig, dump_compare_config
    from .toyworld.scoring import subject_comparison

    config = subject_comparison([VariantConfig(lora=str(lora), strengths=[0.5, 1.0])], images, out / "compare")
    atomic_write_text(out / "compare.yaml", dump_compare_config(config))
    result = run_compare(config, progress)
    scores = {entry.label: {name: round(entry.summary(name).mean, 4) for name in result.metrics}
              for entry in result.entries}
    return {"report": str(result.files["report"]), "scores": scores}
