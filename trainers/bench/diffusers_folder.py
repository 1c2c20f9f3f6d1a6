"""Write a single-file checkpoint as a diffusers-format model folder (what diffusers' example
training scripts take as ``--pretrained_model_name_or_path``), offline.

The benchmark compares trainers on the same weights; diffusers' scripts only read folders. The
architecture comes from Booth's own configs and the weights through Booth's loader, so nothing is
downloaded. Weights are saved in float32, which is what the scripts train in on a CPU.

    python -m trainers.bench.diffusers_folder MODEL.safetensors OUT_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..checkpoint.loader import load_components
from ..errors import BoothError

_PIPELINES = {"sd15": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline"}


def write_diffusers_folder(checkpoint: str | Path, folder: str | Path) -> Path:
    """``folder`` gets unet/, vae/, text_encoder/, tokenizer/, scheduler/ and model_index.json.
    A folder that already has model_index.json is kept as it is (conversion takes a minute)."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return folder
    components = load_components(checkpoint)
    if components.family not in _PIPELINES:
        raise BoothError(f"{checkpoint}: the benchmark's diffusers references train SD1.x/SD2.x; this is "
                         f"{components.family}.")
    parts = {"unet": components.unet, "vae": components.vae, "text_encoder": components.text_encoders[0]}
    for name, module in parts.items():
        module.to(torch.float32).save_pretrained(folder / name, safe_serialization=True)
        module.to("meta")  # free each part once written: the whole model in fp32 is 4 GB
    components.tokenizers[0].save_pretrained(folder / "tokenizer")
    components.scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": _PIPELINES[components.family], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDPMScheduler"],
             "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}
    (folder / "model_index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return folder


if __name__ == "__main__":
    write_diffusers_folder(sys.argv[1], sys.argv[2])
