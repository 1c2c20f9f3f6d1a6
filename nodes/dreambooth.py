"""TrainDreamBooth: a full UNet fine-tune of the graph's model, saved as a checkpoint in models/checkpoints.

It shares its widgets, progress, Cancel and memory handling with Train LoRA (nodes/train.py); what
differs is what trains (every UNet weight, the text encoder for the first N steps at most) and the
result: a standalone single-file checkpoint that the standard Load Checkpoint node (and other front
ends) load, plus, optionally, a LoRA extracted from it for sharing.
"""

from __future__ import annotations

from pathlib import Path

from ..trainers.config import METHOD_DEFAULTS, OPTIMIZERS, SAVE_DTYPES, DreamBoothConfig, TrainConfig
from . import comfy_bridge, ui
from .images import InstanceImages
from .train import (RunWidgets, _float, graph_inputs, output_name_input, prior_inputs, run_inputs, schedule_inputs,
                    train_on_graph)

LORA_SUFFIX = "_lora"  # the extracted LoRA's name: <checkpoint_name>_lora.safetensors


class TrainDreamBooth:
    DESCRIPTION = ("DreamBooth: fine-tune the whole UNet of the model loaded in this graph on your subject (identifier "
                   "+ class prior preservation). Saves a standalone checkpoint into models/checkpoints that Load "
                   "Checkpoint reads, and outputs its MODEL and CLIP. Needs far more memory than a LoRA (a GPU with "
                   "~16 GB or more for SD1.5 at 512 px with the memory savers on).")
    CATEGORY = "Booth/train"
    FUNCTION = "train"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", "STRING", "IMAGE")
    RETURN_NAMES = ("model", "clip", "checkpoint_name", "lora_name", "loss_curve")
    OUTPUT_TOOLTIPS = ("The fine-tuned model, loaded from the saved checkpoint as Load Checkpoint would.",
                       "The saved checkpoint's CLIP (the input CLIP's weights unless the text encoder trained).",
                       "File name of the saved checkpoint in models/checkpoints (for Load Checkpoint).",
                       "File name of the extracted LoRA in models/loras (empty unless extract_lora_rank > 0).",
                       "Loss per step.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        defaults, method = DreamBoothConfig(), METHOD_DEFAULTS["dreambooth"]
        return {
            "required": {
                **graph_inputs(),
                **output_name_input("checkpoint_name", "booth_dreambooth", "models/checkpoints"),
                **schedule_inputs(method["learning_rate"], "1e-6 to 5e-6 for a full fine-tune; higher overfits "
                                  "within a few hundred steps."),
                "prior_preservation": ("BOOLEAN", {"default": method["prior_preservation"], "tooltip": "Also "
                                                   "train on class images so the class keeps looking like the "
                                                   "class (DreamBooth's prior loss)."}),
                **prior_inputs(),
            },
            "optional": {
                "train_text_encoder_steps": ("INT", {"default": defaults.train_text_encoder_steps, "min": 0,
                                                     "max": 100000, "tooltip": "Also train the text encoder for the "
                                                     "first N steps (0 = frozen). A few hundred sharpens identity; "
                                                     "longer overfits."}),
                "use_ema": ("BOOLEAN", {"default": defaults.use_ema, "tooltip": "Save a moving average of the UNet "
                                        "weights (smoother; one more UNet copy in memory)."}),
                "ema_decay": _float(defaults.ema_decay, 0.0, 0.9999, 0.0001, "Averages about 1/(1-decay) steps; "
                                    "0.999 suits runs of about 1000 steps."),
                "optimizer": (list(OPTIMIZERS), {"default": TrainConfig.optimizer, "tooltip": "adamw8bit: "
                              "optimiser state in 8 bits, ~5 GB less GPU memory on SD1.5 (CUDA + bitsandbytes). "
                              "prodigy sets its own step size: give it learning_rate 1."}),
                **run_inputs("checkpoint"),
                "save_dtype": (list(SAVE_DTYPES), {"default": TrainConfig.save_dtype, "tooltip": "Precision of "
                               "the saved checkpoint: fp16 halves the file (~2 GB for SD1.5) and is what front "
                               "ends use."}),
                "extract_lora_rank": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": "Above 0: also save "
                                      "a LoRA of this rank approximating the fine-tune (fine-tuned minus base) as "
                                      "<checkpoint_name>_lora in models/loras."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @comfy_bridge.reports_user_errors
    def train(self, model, clip, vae, dataset: InstanceImages, checkpoint_name, prior_preservation,
              train_text_encoder_steps=0, use_ema=False, ema_decay=0.999, optimizer="adamw", save_dtype="fp16",
              extract_lora_rank=0, overwrite=False, unique_id=None, **widgets):
        """Train, save the checkpoint (and the optional LoRA), and return the checkpoint's MODEL and CLIP
        (Cancel: see :func:`nodes.train.train_on_graph`; the steps done so far are saved)."""
        output = comfy_bridge.safe_output_path(comfy_bridge.checkpoint_folder(), checkpoint_name, ".safetensors",
                                               overwrite, "checkpoint_name")
        lora_output = None
        if extract_lora_rank:  # refuse a name clash before hours of training, not after
            lora_output = comfy_bridge.safe_output_path(comfy_bridge.lora_folder(), output.stem + LORA_SUFFIX,
                                                        ".safetensors", overwrite, "checkpoint_name (its LoRA)")
        config = RunWidgets(**widgets).config(
            "dreambooth", dataset, output, prior=prior_preservation, optimizer=optimizer, save_dtype=save_dtype,
            dreambooth=DreamBoothConfig(train_text_encoder_steps=train_text_encoder_steps, use_ema=use_ema,
                                        ema_decay=ema_decay))
        run = train_on_graph(config, unique_id, model, clip, vae, dataset, overwrite)
        lines = [f"{output.name}: {run.steps} steps in {run.seconds:.0f} s"]
        if lora_output is not None:
            with comfy_bridge.memory_released():  # the base model's copy used for the difference
                lines += extract_to_lora(model, clip, vae, output, lora_output, extract_lora_rank)
        model_out, clip_out, _ = comfy_bridge.load_checkpoint(output)
        curve = run.curve(output.stem)
        return {"ui": {"text": lines, **ui.images_ui(curve, f"booth_{output.stem}_loss")},
                "result": (model_out, clip_out, output.name, lora_output.name if lora_output else "", curve)}


def extract_to_lora(model, clip, vae, tuned: Path, output: Path, rank: int) -> list[str]:
    """Save a LoRA of ``tuned`` minus the graph's model; return what it holds and what it left out."""
    from ..trainers.checkpoint.loader import load_components
    from ..trainers.lora.layouts import save_lora_file
    from ..trainers.lora.toolbox import extract_lora

    tuned_model = load_components(tuned, tokenizer_dir=comfy_bridge.tokenizer_dir())  # ComfyUI's vocabulary
    result = extract_lora(comfy_bridge.graph_components(model, clip, vae), tuned_model, rank=rank, title=output.stem)
    save_lora_file(result.lora, output, overwrite=True)  # the name was checked before training
    return [f"{output.name}: {len(result.lora.modules)} modules at rank <= {rank}, keeps {result.kept_share:.1%} "
            "of the fine-tune's difference", *result.notes]
