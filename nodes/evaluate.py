"""CLIPScore and CompareModels: score images, and compare model files on the same prompts and seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..trainers.errors import BoothError
from ..trainers.sampling import SCHEDULERS
from . import comfy_bridge

CATEGORY = "Booth/evaluate"
_MODEL_TIP = ("A full CLIP model (text + vision) as a Hugging Face folder, or a .safetensors file with its "
              "config.json: a path, or empty to search ComfyUI's models/clip, models/text_encoders and "
              "models/clip_vision folders. Nothing is downloaded.")
_DINO_TIP = ("Optional DINO ViT (e.g. dinov2-small) for the DINO score, given and found like the CLIP model; "
             "empty and none found: the DINO score is left out.")


def _judge_folders() -> list[str]:
    """ComfyUI's folders where a full CLIP or a DINO ViT may be kept (none when ComfyUI is absent)."""
    try:
        import folder_paths
    except ImportError:
        return []
    return [folder for kind in ("clip", "text_encoders", "clip_vision")
            for folder in folder_paths.get_folder_paths(kind)]


def _tokenizer_dir() -> str | None:
    """ComfyUI's own CLIP vocabulary, for judge models that come without tokenizer files."""
    try:
        return comfy_bridge.tokenizer_dir()
    except ImportError:
        return None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _identifiers(text: str) -> list[str]:
    return [word for word in text.replace(",", " ").split() if word]


def _nan_if_missing(scores: dict[str, list[float]], metric: str) -> float:
    values = scores.get(metric)
    return sum(values) / len(values) if values else math.nan


class CLIPScore:
    DESCRIPTION = ("Score an IMAGE batch: CLIP-T (image-prompt similarity, 0-100, identifier words removed from the "
                   "prompt), and with reference images CLIP-I and DINO (mean cosine similarity to the references).")
    CATEGORY = CATEGORY
    FUNCTION = "score"
    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "STRING", "IMAGE")
    RETURN_NAMES = ("clip_t", "clip_i", "dino", "table", "table_image")
    OUTPUT_TOOLTIPS = ("Mean CLIP-T over the batch (100 x max(cosine, 0)).",
                       "Mean CLIP-I (NaN without reference images).",
                       "Mean DINO score (NaN without reference images or a DINO model).",
                       "Per-image scores, tab-separated, with the mean ± std row.",
                       "The same table as an image.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The generated images to score."}),
                "prompts": ("STRING", {"default": "a sks dog in the snow", "multiline": True, "tooltip":
                                       "One prompt per image, one per line; a single line is used for every image."}),
                "identifiers": ("STRING", {"default": "sks", "tooltip": "Made-up identifier words to remove from "
                                           "the prompts before CLIP-T (CLIP has never seen them); space-separated."}),
                "clip_model": ("STRING", {"default": "", "tooltip": _MODEL_TIP}),
            },
            "optional": {
                "reference_images": ("IMAGE", {"tooltip": "Images of the subject (the training images) for CLIP-I "
                                               "and DINO."}),
                "dino_model": ("STRING", {"default": "", "tooltip": _DINO_TIP}),
            },
        }

    @comfy_bridge.reports_user_errors
    def score(self, images, prompts, identifiers, clip_model, reference_images=None, dino_model=""):
        from ..trainers.evaluate.metrics import Judges
        from ..trainers.evaluate.models import load_clip, load_dino
        from ..trainers.evaluate.report import score_table, table_image, text_table

        lines = _lines(prompts)
        if not lines:
            raise BoothError("prompts is empty; give the prompt the images were made from (one per line).")
        folders = _judge_folders()
        clip = load_clip(clip_model.strip() or None, folders, tokenizer_dir=_tokenizer_dir())
        dino = load_dino(dino_model.strip() or None, folders, required=bool(dino_model.strip()))
        judges = Judges.prepare(clip, dino=dino, references=reference_images, identifiers=_identifiers(identifiers))
        scores = judges.score(images, lines)
        columns, rows = score_table(scores, lines)
        picture = torch.from_numpy(table_image(columns, rows, "Booth scores")).float()[None] / 255
        table = text_table(columns, rows)
        return {"ui": {"text": [table]},
                "result": (_nan_if_missing(scores, "clip_t"), _nan_if_missing(scores, "clip_i"),
                           _nan_if_missing(scores, "dino"), table, picture)}


def _checkpoint_names() -> list[str]:
    try:
        import folder_paths
    except ImportError:
        return []
    return folder_paths.get_filename_list("checkpoints")


def _model_file(kind: str, name: str) -> str:
    """A file name from ComfyUI's ``kind`` folders, or a path."""
    import folder_paths

    if Path(name).expanduser().is_file():
        return str(Path(name).expanduser())
    found = folder_paths.get_full_path(kind, name)
    if not found:
        raise BoothError(f"{name!r} is not in ComfyUI's {kind} folders ({', '.join(folder_paths.get_folder_paths(kind))})"
                         " and is not a path to a file.")
    return found


def _report_folder(name: str) -> Path:
    """output/booth/<name>, the name cleaned as for any output file (no path traversal)."""
    page = comfy_bridge.safe_output_path(comfy_bridge.output_folder() / "booth", name, ".html", True, "report_name")
    return page.with_suffix("")


class CompareModels:
    DESCRIPTION = ("Base vs tuned: generate the same prompts x seeds with the base checkpoint and each variant (LoRA "
                   "at one or more strengths, DreamBooth checkpoints), score CLIP-T / CLIP-I / DINO, time the "
                   "generation, and write a self-contained HTML report with grid, plots and CSV/JSON tables. "
                   "Unloads ComfyUI's models first: each variant is loaded fresh from its file.")
    CATEGORY = CATEGORY
    FUNCTION = "compare"
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("grid", "plots", "report_path", "summary")
    OUTPUT_TOOLTIPS = ("Variants x prompts, first seed, labelled.",
                       "One chart per score, generation time, and score vs each swept setting.",
                       "The HTML report (in ComfyUI's output folder), beside grid.png, summary.csv, results.json.",
                       "Mean ± std of each score and seconds per image, one line per variant.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (_checkpoint_names(), {"tooltip": "The base checkpoint."}),
                "variants": ("STRING", {"default": "lora: my_subject.safetensors @ 0.75, 1.0", "multiline": True,
                                        "tooltip": "One per line: 'lora: FILE @ 0.5, 1.0' (on the base; one row per "
                                        "strength), 'checkpoint: FILE' (e.g. a DreamBooth result), or 'checkpoint: "
                                        "FILE + lora: FILE @ 1.0'. Names from models/loras and models/checkpoints, "
                                        "or paths."}),
                "include_base": ("BOOLEAN", {"default": True, "tooltip": "Also generate with the base alone."}),
                "subject": ("STRING", {"default": "sks dog", "tooltip": "Identifier + class; fills '{}' in prompts."}),
                "identifiers": ("STRING", {"default": "sks", "tooltip": "Words removed from prompts before CLIP-T; "
                                           "empty: the subject without its last word."}),
                "prompts": ("STRING", {"default": "", "multiline": True, "tooltip": "One per line, '{}' for the "
                                       "subject; empty: the DreamBooth paper's prompt list."}),
                "prompt_count": ("INT", {"default": 4, "min": 0, "max": 25, "tooltip": "How many of the default "
                                         "prompts to use (0 = all 25)."}),
                "live_subject": ("BOOLEAN", {"default": True, "tooltip": "Default prompts for pets/people (outfits, "
                                             "hats); off: the object prompts."}),
                "seeds": ("STRING", {"default": "0", "tooltip": "Comma-separated; seed s, prompt i -> noise seed "
                                     "s + i, the same for every variant."}),
                "steps": ("STRING", {"default": "30", "tooltip": "Inference steps; several comma-separated values "
                                     "sweep them."}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1, "round": False,
                                  "tooltip": "Classifier-free guidance scale."}),
                "scheduler": (list(SCHEDULERS), {"default": "ddim", "tooltip": "Sampler for every variant."}),
                "width": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip": "Image width."}),
                "height": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip": "Image height."}),
                "report_name": ("STRING", {"default": "compare", "tooltip": "Folder under output/booth/ for the "
                                           "report, images and tables."}),
            },
            "optional": {
                "instance_images": ("STRING", {"default": "", "tooltip": "Folder of the subject's images for CLIP-I "
                                               "and DINO (a path or a subfolder of ComfyUI's input folder); empty: "
                                               "CLIP-T only."}),
                "negative_prompt": ("STRING", {"default": "", "tooltip": "Negative prompt for every image."}),
                "clip_model": ("STRING", {"default": "", "tooltip": _MODEL_TIP}),
                "dino_model": ("STRING", {"default": "", "tooltip": _DINO_TIP}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @comfy_bridge.reports_user_errors
    def compare(self, ckpt_name, variants, include_base, subject, identifiers, prompts, prompt_count, live_subject,
                seeds, steps, cfg, scheduler, width, height, report_name, instance_images="", negative_prompt="",
                clip_model="", dino_model="", unique_id=None):
        import comfy.model_management
        import comfy.utils

        from ..trainers.evaluate.compare import run_compare
        from ..trainers.evaluate.config import CompareConfig, SamplingConfig, parse_number_list, parse_variant_lines

        specs = parse_variant_lines(variants)
        for spec in specs:
            spec.checkpoint = _model_file("checkpoints", spec.checkpoint) if spec.checkpoint else ""
            spec.lora = _model_file("loras", spec.lora) if spec.lora else ""
        folder = _report_folder(report_name)
        config = CompareConfig(
            base=_model_file("checkpoints", ckpt_name), include_base=include_base, variants=specs, subject=subject,
            identifiers=_identifiers(identifiers), live_subject=live_subject, prompts=_lines(prompts),
            prompt_count=prompt_count, seeds=parse_number_list(seeds, "seeds", int),
            instance_images=str(comfy_bridge.relative_to_input(instance_images, "instance_images"))
            if instance_images.strip() else "",
            clip_model=clip_model.strip(), dino_model=dino_model.strip(), model_dirs=_judge_folders(),
            output_dir=str(folder),
            sampling=SamplingConfig(steps=parse_number_list(steps, "steps", int), guidance_scale=cfg,
                                    scheduler=scheduler, negative_prompt=negative_prompt, height=height, width=width),
        ).validate()
        comfy.model_management.unload_all_models()
        comfy_bridge.free_memory()
        bar = comfy.utils.ProgressBar(1, node_id=unique_id)
        progress = comfy_bridge.ComfyProgress(unique_id, folder.name)
        with torch.inference_mode(False):  # the loader and LoRA baking write weights in place
            try:
                result = run_compare(config, progress, tokenizer_dir=_tokenizer_dir(),
                                     on_image=lambda done, total: bar.update_absolute(done, total))
            except BaseException as error:
                comfy_bridge.release_memory(error)
                raise
        comfy_bridge.release_memory()
        plots = torch.stack([torch.from_numpy(np.asarray(Image.open(path).convert("RGB")))
                             for path in result.plots.values()]).float() / 255
        grid = torch.from_numpy(np.asarray(result.grid.convert("RGB"))).float()[None] / 255
        summary = "\n".join(f"{e.label}: " + "  ".join(f"{m} {e.summary(m).text()}" for m in result.metrics)
                            + f"  {e.seconds_per_image:.2f} s/image" for e in result.entries)
        return {"ui": {"text": [summary]}, "result": (grid, plots, str(result.files["report"]), summary)}
