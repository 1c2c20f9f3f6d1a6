"""TrainLoRA: DreamBooth-LoRA / LoRA training on the graph's MODEL/CLIP/VAE, LoRA into models/loras.

Also the parts every Booth training node shares (nodes/dreambooth.py uses them): the widgets for
steps, prior preservation and the run's settings, the config they make, and the run itself with
its progress, Cancel and memory handling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..trainers.config import (LR_SCHEDULERS, METHOD_DEFAULTS, MIXED_PRECISION, LoraConfig, PriorConfig, SampleConfig,
                               TrainConfig)
from ..trainers.errors import BoothError
from . import comfy_bridge, ui
from .images import DATASET_TYPE, InstanceImages

TARGET_CHOICES = {
    "attention": ("attention",),
    "attention + feed-forward": ("attention", "feed_forward"),
    "attention + feed-forward + projections": ("attention", "feed_forward", "projections"),
    "all incl. conv (LoCon)": ("attention", "feed_forward", "projections", "conv"),  # = trainers.lora.UNET_TARGETS
}


def _float(default: float, minimum: float, maximum: float, step: float, tooltip: str) -> tuple:
    return ("FLOAT", {"default": default, "min": minimum, "max": maximum, "step": step, "round": False,
                      "tooltip": tooltip})


# ---- widgets every training node shows (names and meaning shared, so workflows read alike) -----------

def graph_inputs() -> dict:
    return {
        "model": ("MODEL", {"tooltip": "The base model, e.g. from Load Checkpoint (SD1.x, SD2.x or SDXL)."}),
        "clip": ("CLIP", {"tooltip": "The base model's CLIP."}),
        "vae": ("VAE", {"tooltip": "The base model's VAE (used once to encode the training images)."}),
        "dataset": (DATASET_TYPE, {"tooltip": "From Booth Load Instance Images."}),
    }


def output_name_input(name: str, default: str, folder: str) -> dict:
    return {name: ("STRING", {"default": default, "tooltip": f"File name for {folder} (.safetensors is added)."})}


def schedule_inputs(learning_rate: float, learning_rate_tooltip: str) -> dict:
    return {
        "steps": ("INT", {"default": 800, "min": 1, "max": 100000, "tooltip": "Optimiser steps. 400-1600 "
                          "for 3-20 images."}),
        "learning_rate": _float(learning_rate, 0.0, 1.0, 1e-7, learning_rate_tooltip),
    }


def prior_inputs() -> dict:
    return {
        "class_prompt": ("STRING", {"default": "a photo of dog", "tooltip": "The generic class, without "
                                    "the identifier (prior preservation)."}),
        "num_class_images": ("INT", {"default": 100, "min": 1, "max": 10000, "tooltip": "Class images to "
                                     "keep the class intact; missing ones are generated once and reused."}),
        "prior_loss_weight": _float(1.0, 0.0, 10.0, 0.05, "Weight of the class-image loss."),
        "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": "fixed",
                         "tooltip": "Same seed, same result."}),
    }


def run_inputs(output_kind: str) -> dict:
    """Optional settings of a run, in the order the nodes show them."""
    return {
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Images per step."}),
        "gradient_accumulation": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Steps to "
                                  "accumulate before each update (a larger effective batch)."}),
        "lr_scheduler": (list(LR_SCHEDULERS), {"default": "constant", "tooltip": "How the learning rate "
                         "changes over the run (after warm-up)."}),
        "warmup_steps": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": "Steps over which the "
                         "learning rate rises from near 0 to its value."}),
        "mixed_precision": (list(MIXED_PRECISION), {"default": "fp16", "tooltip": "GPU only; the CPU "
                            "always trains in fp32."}),
        "gradient_checkpointing": ("BOOLEAN", {"default": True, "tooltip": "Less GPU memory, ~20% slower."}),
        "min_snr_gamma": _float(0.0, 0.0, 20.0, 0.5, "Min-SNR loss weighting; 5 is the usual value, 0 = off."),
        "noise_offset": _float(0.0, 0.0, 1.0, 0.01, "Helps very dark/bright images; 0.05-0.1 or 0."),
        "class_images_folder": ("STRING", {"default": "", "tooltip": "Optional folder of your own class "
                                           "images; empty = generate them with the base model."}),
        "sample_every": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Preview every N "
                                 "steps (0 = only at the end)."}),
        "sample_prompt": ("STRING", {"default": "", "tooltip": "Prompt for previews; empty = the instance "
                                     "prompt."}),
        "overwrite": ("BOOLEAN", {"default": False, "tooltip": f"Replace an existing {output_kind} of that name."}),
    }


@dataclass(frozen=True)
class RunWidgets:
    """The shared widgets' values, as a node received them."""

    steps: int
    learning_rate: float
    class_prompt: str
    num_class_images: int
    prior_loss_weight: float
    seed: int
    batch_size: int = 1
    gradient_accumulation: int = 1
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    mixed_precision: str = "fp16"
    gradient_checkpointing: bool = True
    min_snr_gamma: float = 0.0
    noise_offset: float = 0.0
    class_images_folder: str = ""
    sample_every: int = 0
    sample_prompt: str = ""

    def config(self, method: str, dataset: InstanceImages, output: Path, prior: bool, **sections) -> TrainConfig:
        """The run's settings: output into ``output``, work files in output/booth/<name>; ``sections``
        are the method's own (lora=..., dreambooth=..., optimizer=...)."""
        return TrainConfig(
            method=method, images=dataset.folder, instance_prompt=dataset.instance_prompt, output=str(output),
            output_dir=str(comfy_bridge.output_folder() / "booth" / output.stem), seed=self.seed, steps=self.steps,
            batch_size=self.batch_size, gradient_accumulation=self.gradient_accumulation,
            learning_rate=self.learning_rate, lr_scheduler=self.lr_scheduler, warmup_steps=self.warmup_steps,
            mixed_precision=self.mixed_precision, gradient_checkpointing=self.gradient_checkpointing,
            min_snr_gamma=self.min_snr_gamma, noise_offset=self.noise_offset, data=dataset.data,
            prior=PriorConfig(enabled=prior, class_prompt=self.class_prompt,
                              class_images=self.class_images_folder.strip(), num_class_images=self.num_class_images,
                              loss_weight=self.prior_loss_weight),
            sample=SampleConfig(every=self.sample_every, prompts=[self.sample_prompt or dataset.instance_prompt]),
            **sections,
        ).validate()


@dataclass(frozen=True)
class GraphRun:
    losses: list[float]
    steps: int
    seconds: float

    def curve(self, title: str) -> torch.Tensor:
        """The loss per step as a ComfyUI IMAGE."""
        from ..trainers.plots import loss_plot

        return torch.from_numpy(loss_plot(self.losses, title=f"{title}: loss per step")).float()[None] / 255


def train_on_graph(config: TrainConfig, unique_id: str | None, model, clip, vae, dataset: InstanceImages,
                   overwrite: bool) -> GraphRun:
    """Train a copy of the graph's model as ``config`` says; its result is written to ``config.output``.

    Cancel (ComfyUI's interrupt) stops training after the step in progress. The result trained so
    far is still saved, complete (written atomically; its metadata records the steps done), the
    model copy used for training is freed, and then ComfyUI's InterruptProcessingException is
    raised like any interrupted node: the prompt ends as interrupted and no output is cached, so
    queueing again trains again from step 0 (turn on overwrite, or pick a new name); a node run is
    not resumable, so no training state is kept. Cancelled before the first step (while class
    images are generated or latents encoded), it writes nothing: an existing file stays as it was.
    """
    progress = comfy_bridge.ComfyProgress(unique_id, Path(config.output).name)
    with torch.inference_mode(False):  # ComfyUI runs nodes in inference mode, which forbids autograd
        try:
            with comfy_bridge.memory_released():
                run = _train_copy(config, progress, model, clip, vae, dataset, overwrite)
        except BoothError:
            if progress.stop_requested:  # stopped while making class images
                comfy_bridge.raise_interrupted()
            raise
    if progress.stop_requested:
        comfy_bridge.raise_interrupted()
    return run


def _train_copy(config: TrainConfig, progress: comfy_bridge.ComfyProgress, model, clip, vae,
                dataset: InstanceImages, overwrite: bool) -> GraphRun:
    """Its own frame, so the model copy (GBs) is freed as soon as it returns."""
    from ..trainers.train import train
    from ..trainers.train.paths import check_run_paths

    check_run_paths(config.resolved(), overwrite=overwrite, resume=False)  # before copying the model (GBs)
    components = comfy_bridge.graph_components(model, clip, vae)
    result = train(config, progress, components=components, instance_images=dataset.images, overwrite=overwrite,
                   resumable=False)
    return GraphRun(result.losses, result.steps, result.seconds)


class TrainLoRA:
    DESCRIPTION = ("Train a LoRA of your subject on the model loaded in this graph (DreamBooth recipe: identifier "
                   "+ class prior). Saves a kohya-format LoRA into models/loras that the standard Load LoRA node reads, "
                   "and outputs MODEL and CLIP with it applied.")
    CATEGORY = "Booth/train"
    FUNCTION = "train"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", "IMAGE")
    RETURN_NAMES = ("model", "clip", "lora_name", "loss_curve")
    OUTPUT_TOOLTIPS = ("The input model with the new LoRA applied (strength 1).",
                       "The input CLIP with the new LoRA applied (strength 1).",
                       "File name of the saved LoRA in models/loras (for Load LoRA).",
                       "Loss per step.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        # The order is the widgets' order in saved workflows: new widgets go at the end of "optional".
        return {
            "required": {
                **graph_inputs(),
                **output_name_input("lora_name", "booth_subject", "models/loras"),
                "method": (["dreambooth_lora", "lora"], {"default": "dreambooth_lora", "tooltip":
                           "dreambooth_lora: identifier + class prior preservation (best quality per byte in the "
                           "reports). lora: plain LoRA on your captions, no class images."}),
                **schedule_inputs(METHOD_DEFAULTS["dreambooth_lora"]["learning_rate"],
                                  "1e-4 suits LoRA; lower it if results look burnt."),
                "rank": ("INT", {"default": 16, "min": 1, "max": 256, "tooltip": "LoRA rank: 4-32; higher = bigger "
                                 "file, more capacity."}),
                "alpha": _float(16.0, 0.01, 1024.0, 0.5, "Scale = alpha / rank; alpha = rank keeps the scale 1."),
                **prior_inputs(),
            },
            "optional": {
                "train_text_encoder": ("BOOLEAN", {"default": False, "tooltip": "Also put LoRA on the text "
                                                   "encoder (stronger identity, overfits sooner)."}),
                "targets": (list(TARGET_CHOICES), {"default": "attention", "tooltip": "Which UNet layers get LoRA."}),
                **run_inputs("LoRA"),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @comfy_bridge.reports_user_errors
    def train(self, model, clip, vae, dataset: InstanceImages, lora_name, method, rank, alpha,
              train_text_encoder=False, targets="attention", overwrite=False, unique_id=None, **widgets):
        """Train, save the LoRA into models/loras, and return the graph's MODEL/CLIP with it applied
        (Cancel: see :func:`train_on_graph`)."""
        output = comfy_bridge.safe_output_path(comfy_bridge.lora_folder(), lora_name, ".safetensors", overwrite,
                                               "lora_name")
        config = RunWidgets(**widgets).config(
            method, dataset, output, prior=method == "dreambooth_lora",
            lora=LoraConfig(rank=rank, alpha=alpha, unet_targets=TARGET_CHOICES[targets],
                            text_encoder=train_text_encoder))
        run = train_on_graph(config, unique_id, model, clip, vae, dataset, overwrite)
        model_out, clip_out = comfy_bridge.apply_lora(model, clip, output, 1.0, 1.0)
        curve = run.curve(output.stem)
        return {"ui": {"text": [f"{output.name}: {run.steps} steps in {run.seconds:.0f} s"],
                       **ui.images_ui(curve, f"booth_{output.stem}_loss")},
                "result": (model_out, clip_out, output.name, curve)}
