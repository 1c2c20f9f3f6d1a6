"""The LoRA toolbox's files in a real ComfyUI: a baked checkpoint gives the image that the base plus
Load LoRA gives, Booth Merge LoRA does the same in the graph, and an extracted LoRA maps completely.

Skipped unless COMFYUI_PATH names a ComfyUI checkout; ComfyUI runs in its own Python (see
tests/test_comfyui.py, whose helpers these tests use).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfy_checkout import IS_CHECKOUT, SKIP_REASON
from test_comfyui import every_layer_lora, install_pack, run_probe, warnings_in
from trainers.files import read_safetensors_header
from trainers.lora.layouts import save_lora_file
from trainers.lora.toolbox import LoraChoice, bake_checkpoint, extract_lora

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.skipif(not IS_CHECKOUT, reason=SKIP_REASON)]

PROBE = Path(__file__).with_name("comfy_toolbox_probe.py")
STRENGTH, TEXT_STRENGTH = 0.8, 0.6
# Images are 0..1. The baked file (fp16, like its base) stores each patched weight rounded once to
# fp16, while ComfyUI on a CPU patches float32 copies; that rounding is the only difference (max
# 4e-4 measured). The LoRA itself moves pixels by up to ~0.3.
SAME_IMAGE = 2e-3


def run_toolbox_probe(*args: object) -> dict:
    return run_probe(*args, timeout=1500, probe=PROBE)


@pytest.fixture(scope="module")
def baked(full_sd15, tmp_path_factory):
    """A LoRA on every targetable layer of the full SD1.5 file (fp16, as trained files are) and the
    file with it baked in at STRENGTH / TEXT_STRENGTH by ``merge --base``."""
    folder = tmp_path_factory.mktemp("toolbox")
    components, lora = every_layer_lora(full_sd15, folder / "every_layer.safetensors")
    del components
    out = bake_checkpoint(full_sd15, [LoraChoice(lora, STRENGTH, TEXT_STRENGTH)], folder / "baked.safetensors")
    return {"lora": lora, "checkpoint": out["output"], "folder": folder}


@pytest.fixture(scope="module")
def same_image(full_sd15, baked, tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy_merge")
    return run_toolbox_probe("same-image", "--ckpt", full_sd15, "--lora", baked["lora"], "--strength", STRENGTH,
                             "--strength-clip", TEXT_STRENGTH, "--baked", baked["checkpoint"],
                             "--pack", install_pack(root), "--root", root)


def test_baked_checkpoint_gives_the_image_of_base_plus_load_lora(same_image):
    loader = same_image["lora_loader"]
    assert loader["log"] == [] and loader["unet_patched"] > 0 and loader["clip_patched"] > 0
    print(json.dumps({key: same_image[key] for key in ("unet_dtype", "lora_loader", "baked", "node", "node_saved")}))
    assert loader["changed_by_lora"]["max"] > 0.05  # the LoRA changes the image a lot ...
    result = same_image["baked"]
    assert result["model_config"] == "SD15" and warnings_in(result["load_log"]) == [] and result["finite"]
    assert result["image_vs_lora_loader"]["max"] <= SAME_IMAGE  # ... and the baked file gives the same image


def test_merge_node_in_the_graph_equals_load_lora_and_saves_the_same_checkpoint(same_image):
    node = same_image["node"]
    assert node["log"] == [] and node["checkpoint_name"] == "node_merged.safetensors"
    assert node["ui"][0].startswith("every_layer.safetensors: ")
    assert node["image_vs_lora_loader"]["max"] <= 1e-6  # the same patches, computed by ComfyUI
    saved = same_image["node_saved"]
    assert saved["model_config"] == "SD15" and warnings_in(saved["load_log"]) == []
    assert saved["image_vs_lora_loader"]["max"] <= SAME_IMAGE


def test_extracted_lora_maps_in_comfyui_with_no_unmapped_key(full_sd15, baked):
    """The transformer and text-encoder layers (convolution names come from the same naming rule;
    their SVDs would add many minutes on a CPU)."""
    result = extract_lora(full_sd15, baked["checkpoint"], rank=8)
    path = save_lora_file(result.lora, baked["folder"] / "extracted.safetensors")
    print(f"extracted {len(result.lora.modules)} modules; kept share at rank 8: {result.kept_share:.6f}, "
          f"at rank 4: {result.kept_share_at(4):.6f}")
    assert result.kept_share > 0.99  # the difference is a rank-4 LoRA (plus fp16 rounding)
    header, _ = read_safetensors_header(path)
    checkpoint_header, _ = read_safetensors_header(full_sd15)
    shapes = baked["folder"] / "shapes"
    shapes.mkdir()
    (shapes / "checkpoint.json").write_text(json.dumps({k: v["shape"] for k, v in checkpoint_header.items()}))
    (shapes / "lora.json").write_text(json.dumps({k: v["shape"] for k, v in header.items()}))

    report = run_probe("keymap", "--checkpoint-shapes", shapes / "checkpoint.json",
                       "--lora-shapes", shapes / "lora.json")

    assert report["model_config"] == "SD15" and report["lora_log"] == []
    assert [name for name, target in report["targets"].items() if target is None] == []
    assert report["patched"] == len(result.lora.modules)
