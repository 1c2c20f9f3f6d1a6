"""Node registry of the pack. Node modules import torch but not diffusers/transformers/peft:
those load when a node runs, so ComfyUI starts as fast as without Booth."""

from .dreambooth import TrainDreamBooth
from .evaluate import CLIPScore, CompareModels
from .images import LoadInstanceImages
from .merge import CombineLoRAs, MergeLoRA
from .train import TrainLoRA

NODE_CLASS_MAPPINGS = {
    "BoothLoadInstanceImages": LoadInstanceImages,
    "BoothTrainLoRA": TrainLoRA,
    "BoothTrainDreamBooth": TrainDreamBooth,
    "BoothMergeLoRA": MergeLoRA,
    "BoothCombineLoRAs": CombineLoRAs,
    "BoothCLIPScore": CLIPScore,
    "BoothCompareModels": CompareModels,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "BoothLoadInstanceImages": "Booth Load Instance Images",
    "BoothTrainLoRA": "Booth Train LoRA (DreamBooth)",
    "BoothTrainDreamBooth": "Booth Train DreamBooth (full checkpoint)",
    "BoothMergeLoRA": "Booth Merge LoRA",
    "BoothCombineLoRAs": "Booth Combine LoRAs",
    "BoothCLIPScore": "Booth CLIP Score",
    "BoothCompareModels": "Booth Compare Models",
}
