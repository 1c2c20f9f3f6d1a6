"""LoadInstanceImages: a folder (or an IMAGE batch) of the subject -> BOOTH_DATASET + preview."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..trainers.config import CROPS, DataConfig
from ..trainers.data import InstanceDataset, preview_batch, scan_image_folder, validate_image_batch
from . import comfy_bridge

DATASET_TYPE = "BOOTH_DATASET"


@dataclass(frozen=True)
class InstanceImages:
    """What flows along a BOOTH_DATASET wire: where the images are and how to prepare them."""

    data: DataConfig
    instance_prompt: str
    folder: str = ""
    images: torch.Tensor | None = None  # an IMAGE batch wired in instead of a folder
    count: int = 0


class LoadInstanceImages:
    DESCRIPTION = ("Images of your subject for DreamBooth / LoRA training: a folder (kohya-style '10_sks dog' "
                   "subfolders and .txt captions work) or an IMAGE batch.")
    CATEGORY = "Booth/data"
    FUNCTION = "load"
    RETURN_TYPES = (DATASET_TYPE, "IMAGE", "INT")
    RETURN_NAMES = ("dataset", "preview", "image_count")
    OUTPUT_TOOLTIPS = ("The training images and how to prepare them; wire into Booth's training nodes.",
                       "The images as training will see them (square crops), for checking.",
                       "How many distinct images were found.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": ("STRING", {"default": "subject", "tooltip": "A folder of images: an absolute path, or a "
                                      "subfolder of ComfyUI's input folder. Ignored when 'images' is connected."}),
                "instance_prompt": ("STRING", {"default": "a photo of sks dog", "multiline": False, "tooltip":
                                               "Caption for images without a .txt file: a rare identifier plus the "
                                               "class, e.g. 'a photo of sks dog'."}),
                "resolution": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8, "tooltip":
                                       "Training resolution in pixels: 512 for SD1.x/SD2.x, 1024 for SDXL."}),
                "crop": (list(CROPS), {"default": "center", "tooltip": "How images are cut to a square: centre, "
                                       "or a few fixed random crops per image."}),
                "aspect_buckets": ("BOOLEAN", {"default": False, "tooltip": "Keep aspect ratios by grouping images "
                                               "into buckets of about resolution² pixels instead of cropping square."}),
                "flip": ("BOOLEAN", {"default": False, "tooltip": "Also train on mirrored copies (not for "
                                     "asymmetric subjects such as text or logos)."}),
                "repeats": ("INT", {"default": 1, "min": 1, "max": 1000, "tooltip": "How often each image counts "
                                    "per epoch (kohya 'N_' folders set their own)."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Use these images instead of the folder."}),
            },
        }

    @comfy_bridge.reports_user_errors
    def load(self, folder, instance_prompt, resolution, crop, aspect_buckets, flip, repeats, images=None):
        data = DataConfig(resolution=resolution, crop=crop, buckets=aspect_buckets, flip=flip, repeats=repeats)
        if images is not None:
            batch = validate_image_batch(images, "images")
            dataset = InstanceDataset.from_image_batch(batch, instance_prompt, resolution=resolution)
            spec = InstanceImages(data, instance_prompt, images=batch, count=batch.shape[0])
        else:
            path = comfy_bridge.relative_to_input(folder, "folder")
            scan = scan_image_folder(path, instance_prompt=instance_prompt or None, repeats=repeats)
            dataset = InstanceDataset(scan.items, resolution=resolution)
            spec = InstanceImages(data, instance_prompt, folder=str(path), count=len(scan.items))
        return (spec, comfy_bridge.image_to_comfy(preview_batch(dataset)), spec.count)
