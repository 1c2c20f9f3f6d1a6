"""TrainLoRA: DreamBooth-LoRA / LoRA training on the graph's MODEL/CLIP/VAE, LoRA into models/loras."""

from __future__ import annotations

import torch

from ..trainers.config import LR_SCHEDULERS, MIXED_PRECISION, LoraConfig, PriorConfig, SampleConfig, TrainConfig
from ..trainers.errors import BoothError
from . import comfy_bridge
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
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The base model, e.g. from Load Checkpoint (SD1.x, SD2.x or SDXL)."}),
                "clip": ("CLIP", {"tooltip": "The base model's CLIP."}),
                "vae": ("VAE", {"tooltip": "The base model's VAE (used once to encode the training images)."}),
                "dataset": (DATASET_TYPE, {"tooltip": "From Booth Load Instance Images."}),
                "lora_name": ("STRING", {"default": "booth_subject", "tooltip": "File name for models/loras "
                                         "(.safetensors is added)."}),
                "method": (["dreambooth_lora", "lora"], {"default": "dreambooth_lora", "tooltip":
                           "dreambooth_lora: identifier + class prior preservation (best quality per byte in the "
                           "reports). lora: plain LoRA on your captions, no class images."}),
                "steps": ("INT", {"default": 800, "min": 1, "max": 100000, "tooltip": "Optimiser steps. 400-1600 "
                                  "for 3-20 images."}),
                "learning_rate": _float(1e-4, 0.0, 1.0, 1e-6, "1e-4 suits LoRA; lower it if results look burnt."),
                "rank": ("INT", {"default": 16, "min": 1, "max": 256, "tooltip": "LoRA rank: 4-32; higher = bigger "
                                 "file, more capacity."}),
                "alpha": _float(16.0, 0.01, 1024.0, 0.5, "Scale = alpha / rank; alpha = rank keeps the scale 1."),
                "class_prompt": ("STRING", {"default": "a photo of dog", "tooltip": "The generic class, without "
                                            "the identifier (prior preservation)."}),
                "num_class_images": ("INT", {"default": 100, "min": 1, "max": 10000, "tooltip": "Class images to "
                                             "keep the class intact; missing ones are generated once and reused."}),
                "prior_loss_weight": _float(1.0, 0.0, 10.0, 0.05, "Weight of the class-image loss."),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "Same seed, same result."}),
            },
            "optional": {
                "train_text_encoder": ("BOOLEAN", {"default": False, "tooltip": "Also put LoRA on the text "
                                                   "encoder (stronger identity, overfits sooner)."}),
                "targets": (list(TARGET_CHOICES), {"default": "attention", "tooltip": "Which UNet layers get LoRA."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Images per step."}),
                "gradient_accumulation": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Steps to "
                                          "accumulate before each update (a larger effective batch)."}),
                "lr_scheduler": (list(LR_SCHEDULERS), {"default": "constant"}),
                "warmup_steps": ("INT", {"default": 0, "min": 0, "max": 10000}),
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
                "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing LoRA of that name."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def train(self, model, clip, vae, dataset: InstanceImages, lora_name, method, steps, learning_rate, rank, alpha,
              class_prompt, num_class_images, prior_loss_weight, seed, train_text_encoder=False,
              targets="attention", batch_size=1, gradient_accumulation=1, lr_scheduler="constant", warmup_steps=0,
              mixed_precision="fp16", gradient_checkpointing=True, min_snr_gamma=0.0, noise_offset=0.0,
              class_images_folder="", sample_every=0, sample_prompt="", overwrite=False, unique_id=None):
        """Train, save the LoRA into models/loras, and return the graph's MODEL/CLIP with it applied.

        Cancel (ComfyUI's interrupt) stops training after the step in progress. The LoRA trained so
        far is still saved, complete (written atomically; its metadata records the steps done), the
        model copy used for training is freed, and then the node raises ComfyUI's
        InterruptProcessingException like any interrupted node: the prompt ends as interrupted and
        no output is cached, so queueing again trains again (turn on overwrite, or pick a new name).
        Cancelled while class images are generated, it keeps those images for the next run and
        writes no LoRA.
        """
        from ..trainers.plots import loss_plot

        output = comfy_bridge.safe_output_path(comfy_bridge.lora_folder(), lora_name, ".safetensors", overwrite,
                                               "lora_name")
        work = comfy_bridge.output_folder() / "booth" / output.stem
        config = TrainConfig(
            method=method, images=dataset.folder, instance_prompt=dataset.instance_prompt, output=str(output),
            output_dir=str(work), seed=seed, steps=steps, batch_size=batch_size,
            gradient_accumulation=gradient_accumulation, learning_rate=learning_rate, lr_scheduler=lr_scheduler,
            warmup_steps=warmup_steps, mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
            min_snr_gamma=min_snr_gamma, noise_offset=noise_offset, data=dataset.data,
            prior=PriorConfig(enabled=method == "dreambooth_lora", class_prompt=class_prompt,
                              class_images=class_images_folder.strip(), num_class_images=num_class_images,
                              loss_weight=prior_loss_weight),
            lora=LoraConfig(rank=rank, alpha=alpha, unet_targets=TARGET_CHOICES[targets],
                            text_encoder=train_text_encoder),
            sample=SampleConfig(every=sample_every, prompts=[sample_prompt or dataset.instance_prompt]),
        ).validate()
        progress = comfy_bridge.ComfyProgress(unique_id, output.name)
        with torch.inference_mode(False):  # ComfyUI runs nodes in inference mode, which forbids autograd
            try:
                losses, steps_done, seconds = _train_on_graph(config, progress, model, clip, vae, dataset)
            except BaseException as error:
                comfy_bridge.release_memory(error)
                if isinstance(error, BoothError) and progress.stop_requested:  # stopped making class images
                    comfy_bridge.raise_interrupted()
                raise
        comfy_bridge.release_memory()
        if progress.stop_requested:
            comfy_bridge.raise_interrupted()
        curve = torch.from_numpy(loss_plot(losses, title=f"{output.stem}: loss per step")).float()[None] / 255
        model_out, clip_out = comfy_bridge.apply_lora(model, clip, output, 1.0, 1.0)
        return {"ui": {"text": [f"{output.name}: {steps_done} steps in {seconds:.0f} s"]},
                "result": (model_out, clip_out, output.name, curve)}


def _train_on_graph(config: TrainConfig, progress: comfy_bridge.ComfyProgress, model, clip, vae,
                    dataset: InstanceImages) -> tuple[list[float], int, float]:
    """Train a copy of the graph's model. Its own frame, so the copy (GBs) is freed as soon as it returns."""
    from ..trainers.checkpoint.loader import load_components
    from ..trainers.train import train

    components = load_components(comfy_bridge.graph_state_dict(model, clip, vae), name="the connected model",
                                 tokenizer_dir=comfy_bridge.tokenizer_dir())
    result = train(config, progress, components=components, instance_images=dataset.images)
    return result.losses, result.steps, result.seconds
