"""Base vs tuned: the same prompts, seeds and sampler settings through every model variant, scored.

Each variant (the base, base + LoRA at a strength, a DreamBooth checkpoint, or a model trained by a
sweep) is loaded fresh from its file, so no variant can leak weights into the next. Generation time
is measured the same way for all: after one untimed warm-up image per variant (first-call costs
such as kernel selection and memory allocation), wall time over all of the variant's images,
synchronised on a GPU, divided by the number of images.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from ..config import TrainConfig, dump_config, load_config
from ..errors import BoothError
from ..files import read_safetensors_header
from ..progress import Progress
from ..sampling import SampleSettings, generate, save_images, to_pil
from .config import CompareConfig
from .metrics import Judges, Summary, summarise
from .models import load_clip, load_dino
from .prompts import default_prompts, fill_prompts

REFERENCE_SIZE = 448  # pixels; the judges resize to their own input size (224 for the usual models)
AXES = ("train_steps", "learning_rate", "inference_steps", "lora_strength")
AXIS_LABELS = {"train_steps": "training steps", "learning_rate": "learning rate",
               "inference_steps": "inference steps", "lora_strength": "LoRA strength"}


@dataclass
class Variant:
    """One model to generate with. ``coordinates`` place it in a sweep (axis name -> value)."""

    label: str
    checkpoint: Path
    lora: Path | None = None
    strength: float = 1.0
    coordinates: dict[str, float] = field(default_factory=dict)

    @property
    def weights_file(self) -> Path:
        """The file that makes this variant what it is: the LoRA, else the checkpoint."""
        return self.lora or self.checkpoint


@dataclass
class Entry:
    """One row of the comparison: a variant sampled at one number of inference steps."""

    label: str
    variant: Variant
    inference_steps: int
    prompts: list[str]  # per image, as generated (identifier included)
    seeds: list[int]  # per image
    scores: dict[str, list[float]]  # metric -> per image
    seconds_per_image: float
    file_bytes: int
    training: dict[str, float | str]
    image_files: list[Path]
    preview: list  # PIL images of the first seed, one per prompt, grid-sized

    @property
    def coordinates(self) -> dict[str, float]:
        return {**self.variant.coordinates, "inference_steps": self.inference_steps}

    def summary(self, metric: str) -> Summary:
        return summarise(self.scores.get(metric, []))


@dataclass
class CompareResult:
    entries: list[Entry]
    prompts: list[str]  # the distinct prompts, in grid column order
    metrics: tuple[str, ...]  # the scores that could be computed
    output_dir: Path
    config: CompareConfig
    judges: dict[str, str]  # judge kind -> model source
    grid: object = None  # PIL image: variants x prompts
    xy_grid: object = None  # PIL image over the first two swept axes, or None
    plots: dict[str, Path] = field(default_factory=dict)  # name -> PNG
    files: dict[str, Path] = field(default_factory=dict)  # report, tables, grids


# ---- what the training left in the file ------------------------------------------------------------

def training_figures(path: Path) -> dict[str, float | str]:
    """Steps, training time and peak memory recorded in a Booth (or kohya) file's metadata, if any."""
    if path.suffix.lower() != ".safetensors":
        return {}
    _, meta = read_safetensors_header(path)
    figures: dict[str, float | str] = {}
    if "booth.method" in meta:
        figures["method"] = meta["booth.method"]
    for name, keys in (("steps", ("booth.steps", "ss_steps")), ("seconds", ("booth.training_seconds",)),
                       ("peak_memory_bytes", ("booth.peak_memory_bytes",)), ("learning_rate", ("ss_learning_rate",))):
        for key in keys:
            try:
                figures[name] = float(meta[key])
                break
            except (KeyError, ValueError):
                continue
    if "seconds" not in figures:
        try:
            figures["seconds"] = float(meta["ss_training_finished_at"]) - float(meta["ss_training_started_at"])
        except (KeyError, ValueError):
            pass
    return figures


# ---- the variants ----------------------------------------------------------------------------------

def _existing(path: str, what: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise BoothError(f"{what} not found: {file}. Check the path in the comparison config.")
    return file


def configured_variants(config: CompareConfig) -> list[Variant]:
    """The base (unless left out) and the listed variants, one per LoRA strength."""
    variants = [Variant("base", _existing(config.base, "base checkpoint"))] if config.include_base else []
    for spec in config.variants:
        checkpoint = _existing(spec.checkpoint or config.base, "checkpoint")
        if not spec.lora:
            variants.append(Variant(spec.name or checkpoint.stem, checkpoint))
            continue
        lora = _existing(spec.lora, "LoRA")
        prefix = spec.name or (f"{checkpoint.stem} + {lora.stem}" if spec.checkpoint else lora.stem)
        for strength in spec.strengths:
            variants.append(Variant(f"{prefix} @ {strength:g}", checkpoint, lora, strength,
                                    {"lora_strength": strength}))
    return variants


def sweep_runs(config: CompareConfig) -> list[TrainConfig]:
    """One training config per (steps, learning rate) pair, all sharing one cache folder."""
    sweep = config.sweep
    if not sweep.train_config:
        return []
    template = load_config(sweep.train_config)
    template.base = template.base or config.base
    runs_dir = Path(config.output_dir) / "runs"
    cache = template.cache_dir or str(runs_dir / "cache")
    runs = []
    for steps, rate in itertools.product(sweep.train_steps or [template.steps],
                                         sweep.learning_rates or [template.learning_rate]):
        resolved_rate = replace(template, learning_rate=rate).resolved().learning_rate
        folder = runs_dir / f"{template.method}-steps{steps}-lr{resolved_rate:g}"
        runs.append(replace(template, steps=steps, learning_rate=resolved_rate, output_dir=str(folder),
                            output=str(folder / f"{template.method}.safetensors"), cache_dir=cache).validate())
    return runs


def _already_trained(run: TrainConfig) -> bool:
    """The output exists, was made by exactly this (resolved) config, and ran every step (was not stopped)."""
    output = Path(run.resolved().output)
    if not output.is_file():
        return False
    meta = read_safetensors_header(output)[1]
    return meta.get("booth.config") == dump_config(run.resolved()) and meta.get("booth.steps") == str(run.steps)


def train_sweep(config: CompareConfig, progress: Progress) -> list[Variant]:
    """Train (or reuse) every sweep run and return its variants."""
    from ..train import train

    variants = []
    for run in sweep_runs(config):
        output = Path(run.resolved().output)
        if _already_trained(run):
            progress.on_message(f"sweep: reusing {output} (trained with the same settings)")
        else:
            progress.on_message(f"sweep: training {run.method}, {run.steps} steps, learning rate {run.learning_rate:g}")
            if train(run, progress).stopped:  # variants load the saved file, not the model left in memory
                raise BoothError(f"The sweep was stopped while training {run.output_dir}; run the comparison again "
                                 "to train that run from the start (finished runs are reused).")
        where = {"train_steps": float(run.steps), "learning_rate": float(run.learning_rate)}
        label = f"{run.method} {run.steps} train steps lr {run.learning_rate:g}"
        if run.method == "dreambooth":
            variants.append(Variant(label, output, coordinates=where))
            continue
        for strength in config.sweep.lora_strengths:
            variants.append(Variant(f"{label} @ {strength:g}", _existing(run.base, "base checkpoint"), output,
                                    strength, {**where, "lora_strength": strength}))
    return variants


# ---- generating and scoring ------------------------------------------------------------------------

def evaluation_prompts(config: CompareConfig) -> list[str]:
    if config.prompts:
        return fill_prompts(config.prompts, config.subject)
    return default_prompts(config.subject, live=config.live_subject, count=config.prompt_count or None)


def load_references(folder: str, size: int = REFERENCE_SIZE) -> torch.Tensor | None:
    """The instance images as a BHWC batch in [0, 1], each scaled and centre-cropped to a ``size`` square."""
    if not folder:
        return None
    import numpy as np

    from ..data import cover_crop, load_image, scan_image_folder

    items = scan_image_folder(folder, instance_prompt="reference").items
    squares = [np.asarray(cover_crop(load_image(item.source), (size, size)), dtype=np.float32) / 255 for item in items]
    return torch.from_numpy(np.stack(squares))


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_variant(variant: Variant, device: torch.device, tokenizer_dir: str | None):
    from ..checkpoint.loader import load_components
    from ..lora import apply_lora, read_lora

    components = load_components(variant.checkpoint, tokenizer_dir=tokenizer_dir,
                                 dtype=torch.float16 if device.type == "cuda" else torch.float32)
    if variant.lora is not None:
        apply_lora(components, read_lora(variant.lora), variant.strength)
    for module in (components.unet, components.vae, *components.text_encoders):
        module.to(device)
    return components


def _preview(images: torch.Tensor, size: int) -> list:
    pictures = to_pil(images)
    for picture in pictures:
        picture.thumbnail((size, size))
    return pictures


def _folder_name(label: str) -> str:
    """A safe folder name per label; the hash keeps labels that differ only in odd characters apart."""
    import hashlib

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]
    return f"{safe}-{hashlib.blake2b(label.encode(), digest_size=3).hexdigest()}"


def evaluate_variant(variant: Variant, config: CompareConfig, judges: Judges, prompts: list[str],
                     device: torch.device, *, tokenizer_dir: str | None = None,
                     on_image: Callable[[int], None] | None = None) -> list[Entry]:
    """Generate every prompt x seed at every inference-step count, time it, score it; one Entry per count."""
    s = config.sampling
    components = _load_variant(variant, device, tokenizer_dir)
    entries = []
    try:
        base_settings = SampleSettings(steps=s.steps[0], guidance_scale=s.guidance_scale, height=s.height,
                                       width=s.width, negative_prompt=s.negative_prompt, scheduler=s.scheduler)
        generate(components, prompts[:1], seed=0, settings=base_settings, batch_size=1)  # warm-up, untimed
        for steps in s.steps:
            settings = replace(base_settings, steps=steps)
            batches = []
            _synchronise(device)
            started = time.perf_counter()
            for seed in config.seeds:
                batches.append(generate(components, prompts, seed=seed, settings=settings, batch_size=s.batch_size))
                if on_image is not None:
                    on_image(len(prompts))
            _synchronise(device)
            images = torch.cat(batches)
            seconds = (time.perf_counter() - started) / images.shape[0]
            label = variant.label + (f", {steps} inference steps" if len(s.steps) > 1 else "")
            files = save_images(images, Path(config.output_dir) / "images" / _folder_name(label), "image")
            per_image_prompts = prompts * len(config.seeds)
            entries.append(Entry(label, variant, steps, per_image_prompts,
                                 [seed for seed in config.seeds for _ in prompts],
                                 judges.score(images, per_image_prompts), seconds,
                                 variant.weights_file.stat().st_size, training_figures(variant.weights_file),
                                 files, _preview(images[:len(prompts)], config.grid_cell_size)))
    finally:
        del components
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return entries


def run_compare(config: CompareConfig, progress: Progress | None = None, *, tokenizer_dir: str | None = None,
                on_image: Callable[[int, int], None] | None = None) -> CompareResult:
    """Train the sweep (if any), evaluate every variant, and write the grids, plots, tables and report.

    ``on_image(done, total)`` is called as images are made (for a progress bar); ``progress`` gets
    messages and may stop the run between variants.
    """
    from ..train.runtime import choose_device
    from .report import write_outputs

    config.validate()
    progress = progress or Progress()
    device = choose_device(config.device)
    prompts = evaluation_prompts(config)
    clip = load_clip(config.clip_model or None, config.model_dirs, device, tokenizer_dir)
    dino = load_dino(config.dino_model or None, config.model_dirs, device, required=bool(config.dino_model))
    judges = Judges.prepare(clip, dino=dino, references=load_references(config.instance_images),
                            identifiers=config.identifier_words())
    progress.on_message(f"judges: CLIP {clip.source}" + (f", DINO {dino.source}" if dino else ", no DINO model")
                        + ("" if config.instance_images else "; no instance_images, so CLIP-T only"))
    variants = configured_variants(config) + train_sweep(config, progress)
    total = len(variants) * len(config.sampling.steps) * len(config.seeds) * len(prompts)
    done = 0

    def count(images: int) -> None:
        nonlocal done
        done += images
        if on_image is not None:
            on_image(done, total)

    entries: list[Entry] = []
    for index, variant in enumerate(variants, start=1):
        if progress.should_stop():
            raise BoothError(f"Comparison stopped after {index - 1} of {len(variants)} variants.")
        progress.on_message(f"[{index}/{len(variants)}] {variant.label}")
        entries += evaluate_variant(variant, config, judges, prompts, device, tokenizer_dir=tokenizer_dir,
                                    on_image=count)
    result = CompareResult(entries, prompts, judges.available, Path(config.output_dir), config,
                           {"clip": str(clip.source), **({"dino": str(dino.source)} if dino else {})})
    write_outputs(result)
    progress.on_message(f"report: {result.files['report']}")
    return result


def swept_axes(entries: list[Entry]) -> list[str]:
    """The axes along which the entries take more than one value, in AXES order."""
    return [axis for axis in AXES if len({e.coordinates[axis] for e in entries if axis in e.coordinates}) > 1]

