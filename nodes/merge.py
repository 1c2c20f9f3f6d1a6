"""MergeLoRA and CombineLoRAs: the LoRA toolbox in the graph.

Booth reads each LoRA (any common layout), checks it against the connected model's family and
size, and hands ComfyUI only what fits, in the kohya layout; ComfyUI then patches MODEL/CLIP the
way its own Load LoRA does, so the result is what Load LoRA would give for a kohya file. A LoRA for
another model is refused with the reason instead of being half applied.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..trainers.errors import BoothError
from . import comfy_bridge

NONE = "None"
SLOTS = 3  # LoRAs per node; chain nodes for more
DTYPES = ("keep", "fp16", "bf16", "fp32")
# ComfyUI's model config classes for the families Booth knows.
COMFY_FAMILIES = {"SD15": "sd15", "SD20": "sd2", "SDXL": "sdxl"}


def lora_names() -> list[str]:
    """The files in ComfyUI's loras folders (none when ComfyUI is absent, e.g. in plain tests)."""
    try:
        import folder_paths
    except ImportError:
        return []
    return folder_paths.get_filename_list("loras")


def lora_path(name: str) -> Path:
    import folder_paths

    return Path(folder_paths.get_full_path_or_raise("loras", name))


def graph_family(model) -> tuple[str, str]:
    """(Booth family, variant) of a ComfyUI MODEL, from its config and widths."""
    from ..trainers.checkpoint.families import FAMILIES, unet_variant

    config = model.model.model_config
    family = COMFY_FAMILIES.get(type(config).__name__)
    if family is None:
        raise BoothError(f"The connected model is a {type(config).__name__}; Booth merges LoRAs into "
                         f"{', '.join(spec.label for spec in FAMILIES.values())} models.")
    channels = config.unet_config.get("model_channels")
    widths = [channels * mult for mult in config.unet_config.get("channel_mult", ())]
    variant = unet_variant(family, widths)
    if variant is not None:
        return family, variant
    raise BoothError(f"The connected {FAMILIES[family].label} model has {channels} base channels, a size Booth "
                     "does not know; its LoRAs cannot be checked.")


def _strength(tooltip: str) -> tuple:
    return ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01, "tooltip": tooltip})


def lora_inputs(slot: int, optional: bool, clip_tooltip: str) -> dict:
    """Widgets of one LoRA slot: file, UNet strength, text-encoder strength."""
    choice = {"tooltip": f"LoRA {slot}, from models/loras (kohya, LyCORIS LoCon, diffusers/peft or ComfyUI-trained"
                         " files)." + (" None = no LoRA in this slot." if optional else "")}
    if optional:
        choice["default"] = NONE
    return {f"lora_{slot}": ([NONE, *lora_names()] if optional else lora_names(), choice),
            f"strength_model_{slot}": _strength(f"Strength of LoRA {slot} on the UNet (1 = as trained)."),
            f"strength_clip_{slot}": _strength(clip_tooltip.format(slot=slot))}


def chosen_loras(inputs: dict) -> list[tuple[str, float, float]]:
    """(file name, UNet strength, text strength) of each filled slot, in order."""
    return [(inputs[f"lora_{slot}"], inputs[f"strength_model_{slot}"], inputs[f"strength_clip_{slot}"])
            for slot in range(1, SLOTS + 1) if inputs.get(f"lora_{slot}", NONE) != NONE]


class MergeLoRA:
    DESCRIPTION = ("Merge up to three LoRAs into the connected MODEL and CLIP, each with its own UNet and text-encoder "
                   "strength, after checking each one fits the model (a LoRA for another model is refused, naming "
                   "both). Optionally save the result as a single-file checkpoint in models/checkpoints.")
    CATEGORY = "Booth/lora"
    FUNCTION = "merge"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("model", "clip", "checkpoint_name")
    OUTPUT_TOOLTIPS = ("The model with the LoRAs merged.", "The CLIP with the LoRAs merged.",
                       "File name of the saved checkpoint in models/checkpoints (empty when not saved).")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        clip_tooltip = "Strength of LoRA {slot} on the text encoder(s)."
        slots = {slot: lora_inputs(slot, slot > 1, clip_tooltip) for slot in range(1, SLOTS + 1)}
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The base model, e.g. from Load Checkpoint (SD1.x, SD2.x or SDXL)."}),
                "clip": ("CLIP", {"tooltip": "The base model's CLIP."}),
                **slots[1],
            },
            "optional": {
                **slots[2], **slots[3],
                "skip_unknown": ("BOOLEAN", {"default": False, "tooltip": "Merge the rest when a LoRA has keys Booth "
                                             "cannot read or modules naming no layer (they are listed). Off: such a "
                                             "LoRA is refused. A LoRA for another model is always refused."}),
                "save_checkpoint": ("BOOLEAN", {"default": False, "tooltip": "Also write the merged model as one "
                                                "checkpoint file into models/checkpoints (needs vae)."}),
                "vae": ("VAE", {"tooltip": "The VAE to store in the saved checkpoint (only with save_checkpoint)."}),
                "checkpoint_name": ("STRING", {"default": "booth_merged", "tooltip": "File name for "
                                               "models/checkpoints (.safetensors is added)."}),
                "dtype": (list(DTYPES), {"default": "fp16", "tooltip": "Precision of the saved checkpoint; keep = "
                                         "as the model is loaded."}),
                "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace a checkpoint of that name."}),
            },
        }

    @comfy_bridge.reports_user_errors
    def merge(self, model, clip, skip_unknown=False, save_checkpoint=False, vae=None, checkpoint_name="booth_merged",
              dtype="fp16", overwrite=False, **slots):
        import comfy.sd
        import torch

        from ..trainers.lora.layouts import lora_file_tensors
        from ..trainers.lora.toolbox import lora_for_family

        loras = chosen_loras(slots)
        output = None
        if save_checkpoint:
            if vae is None:
                raise BoothError("save_checkpoint needs the vae input connected (the checkpoint stores the VAE too).")
            output = comfy_bridge.safe_output_path(comfy_bridge.checkpoint_folder(), checkpoint_name, ".safetensors",
                                                   overwrite, "checkpoint_name")
        family, variant = graph_family(model)
        checked = [(name, *lora_for_family(lora_path(name), family, variant, skip_unknown=skip_unknown), unet, text)
                   for name, unet, text in loras]  # every LoRA checked before the model is touched
        lines = []
        for name, lora, left_out, unet, text in checked:
            model, clip = comfy.sd.load_lora_for_models(model, clip, lora_file_tensors(lora, torch.float32), unet, text)
            lines.append(f"{name}: {len(lora.modules)} modules at {unet:g} (text {text:g})"
                         + (f"; left out {len(left_out)}: {', '.join(left_out[:5])}" if left_out else ""))
        if output is not None:
            save_graph_checkpoint(model, clip, vae, output, dtype, [(n, u, t) for n, _, _, u, t in checked])
            lines.append(f"saved {output.name}")
        return {"ui": {"text": ["\n".join(lines)]}, "result": (model, clip, output.name if output else "")}


def save_graph_checkpoint(model, clip, vae, output, dtype: str, loras: list[tuple[str, float, float]]) -> None:
    """The graph's MODEL/CLIP/VAE with their patches baked, as one original-layout file (atomic)."""
    from ..trainers.checkpoint.writer import parse_dtype
    from ..trainers.files import save_tensors

    state = comfy_bridge.graph_state_dict(model, clip, vae)
    cast = parse_dtype(dtype)
    if cast is not None:
        state = {key: value.to(cast) if value.is_floating_point() else value for key, value in state.items()}
    merged = [{"file": name, "strength": unet, "text_strength": text} for name, unet, text in loras]
    save_tensors(state, output, {"modelspec.title": output.stem, "booth.merged_loras": json.dumps(merged)})


class CombineLoRAs:
    DESCRIPTION = ("Combine up to three LoRAs into one LoRA file in models/loras: exactly (ranks side by side) or "
                   "re-compressed by SVD to a target rank, reporting how much of the combined update it keeps.")
    CATEGORY = "Booth/lora"
    FUNCTION = "combine"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_name",)
    OUTPUT_TOOLTIPS = ("File name of the combined LoRA in models/loras (for Load LoRA).",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        clip_tooltip = "Strength of LoRA {slot}'s text-encoder modules in the combined LoRA."
        return {
            "required": {
                **lora_inputs(1, False, clip_tooltip), **lora_inputs(2, False, clip_tooltip),
                "lora_name": ("STRING", {"default": "booth_combined", "tooltip": "File name for models/loras "
                                         "(.safetensors is added)."}),
                "rank": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": "0 = exact: the ranks side by "
                                 "side (rank = their sum). Above 0: re-compress each layer by SVD to at most this "
                                 "rank."}),
            },
            "optional": {
                **lora_inputs(3, True, clip_tooltip),
                "dtype": (["fp16", "bf16", "fp32"], {"default": "fp16", "tooltip": "Precision of the saved LoRA."}),
                "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace a LoRA of that name."}),
            },
        }

    @comfy_bridge.reports_user_errors
    def combine(self, lora_name, rank, dtype="fp16", overwrite=False, **slots):
        from ..trainers.checkpoint.writer import parse_dtype
        from ..trainers.lora.layouts import save_lora_file
        from ..trainers.lora.toolbox import LoraChoice, combine_loras

        output = comfy_bridge.safe_output_path(comfy_bridge.lora_folder(), lora_name, ".safetensors", overwrite,
                                               "lora_name")
        choices = [LoraChoice(lora_path(name), unet, text) for name, unet, text in chosen_loras(slots)]
        result = combine_loras(choices, rank=rank or None, title=output.stem)
        save_lora_file(result.lora, output, dtype=parse_dtype(dtype), overwrite=overwrite)
        ranks = ", ".join(f"{count} at rank {r}" for r, count in result.ranks.items())
        text = f"{output.name}: {len(result.lora.modules)} modules ({ranks}), keeps {result.kept_share:.1%}"
        return {"ui": {"text": [text, *result.notes]}, "result": (output.name,)}
