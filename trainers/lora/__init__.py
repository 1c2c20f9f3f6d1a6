"""LoRA networks: train them with peft, save and read them in the kohya layout, bake them into weights."""

from .apply import apply_lora
from .kohya import LoraModule, LoraWeights, lora_state_dict, read_lora, save_lora, saved_layers
from .network import UNET_TARGETS, LoraSettings, add_lora, has_lora, lora_parameters, merge_lora, remove_lora

__all__ = ["UNET_TARGETS", "LoraModule", "LoraSettings", "LoraWeights", "add_lora", "apply_lora", "has_lora",
           "lora_parameters", "lora_state_dict", "merge_lora", "read_lora", "remove_lora", "save_lora",
           "saved_layers"]
