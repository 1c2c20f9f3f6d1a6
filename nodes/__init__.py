"""Node registry of the pack. Node modules import torch but not diffusers/transformers/peft:
those load when a node runs, so ComfyUI starts as fast as without Booth."""

from .images import LoadInstanceImages
from .train import TrainLoRA

NODE_CLASS_MAPPINGS = {
    "BoothLoadInstanceImages": LoadInstanceImages,
    "BoothTrainLoRA": TrainLoRA,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "BoothLoadInstanceImages": "Booth Load Instance Images",
    "BoothTrainLoRA": "Booth Train LoRA (DreamBooth)",
}
