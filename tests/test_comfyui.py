"""Booth's files in a real ComfyUI, and ComfyUI's files in Booth.

ComfyUI runs in its own Python (a subprocess running comfy_probe.py, which reports what ComfyUI
did as JSON); the assertions are here. Skipped unless COMFYUI_PATH names a ComfyUI checkout.
COMFYUI_PYTHON picks its interpreter (default: the checkout's .venv, else this Python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from comfy_probe import RESULT_PREFIX
from trainers.checkpoint.components import SDComponents
from trainers.checkpoint.convert import convert_checkpoint
from trainers.checkpoint.families import FAMILIES, architecture
from trainers.checkpoint.inspect import describe_checkpoint
from trainers.checkpoint.loader import load_components
from trainers.checkpoint.modules import make_text_encoder, make_unet, make_vae
from trainers.checkpoint.writer import to_original_state_dict
from trainers.lora import UNET_TARGETS, LoraSettings, add_lora, apply_lora, read_lora, remove_lora, save_lora
from trainers.lora.kohya import ALPHA, DOWN, UP
from trainers.lora.names import name_index, parts, saved_names
from trainers.lora.network import ADAPTER, adapter_layers

PROBE = Path(__file__).with_name("comfy_probe.py")
REPO = Path(__file__).resolve().parents[1]
COMFYUI = Path(os.environ.get("COMFYUI_PATH", "")).expanduser() if os.environ.get("COMFYUI_PATH") else None
IS_CHECKOUT = COMFYUI is not None and (COMFYUI / "comfy" / "sd.py").is_file()

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.slow,
    pytest.mark.skipif(not IS_CHECKOUT, reason=(
        "set COMFYUI_PATH to a ComfyUI checkout (a folder with comfy/sd.py) to run these tests" if COMFYUI is None
        else f"COMFYUI_PATH={COMFYUI} is not a ComfyUI checkout (no comfy/sd.py in it)")),
]

EVERY_LAYER = LoraSettings(rank=4, alpha=4.0, unet_targets=tuple(UNET_TARGETS), text_encoder=True)
COMFY_CONFIG = {"sd15": "SD15", "sd2": "SD20", "sdxl": "SDXL"}
# One module of each kind whose patched weight ComfyUI and Booth must agree on.
CHECKED_MODULES = ("attn2_to_k", "resnets_0_conv1", "attentions_0_proj_in", "layers_0_mlp_fc1")


def comfy_python() -> str:
    chosen = os.environ.get("COMFYUI_PYTHON")
    if chosen:
        return chosen
    for venv_python in (COMFYUI / ".venv" / "bin" / "python", COMFYUI / ".venv" / "Scripts" / "python.exe"):
        if venv_python.is_file():
            return str(venv_python)
    return sys.executable


def run_probe(*args: object, timeout: float = 900) -> dict:
    """Run one comfy_probe.py verb inside ComfyUI and return its JSON report."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(COMFYUI), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([comfy_python(), str(PROBE), *map(str, args)], cwd=COMFYUI, env=env,
                          capture_output=True, text=True, timeout=timeout)
    reports = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not reports:
        pytest.fail(f"comfy_probe.py {args[0]} failed (exit {done.returncode}):\n{done.stderr[-6000:]}")
    return json.loads(reports[-1][len(RESULT_PREFIX):])


def warnings_in(log: list[dict]) -> list[str]:
    return [entry["message"] for entry in log if entry["level"] != "DEBUG"]


def core_shape(shape) -> tuple[int, ...]:
    """A 1x1 convolution and a linear layer hold the same matrix (ComfyUI reshapes LoRA products)."""
    return tuple(shape[:2]) if tuple(shape[2:]) == (1, 1) else tuple(shape)


def saved_modules(components: SDComponents) -> dict[str, torch.nn.Module]:
    """Kohya name -> peft layer, for every adapted layer, named as save_lora names it."""
    modules = {}
    for part in parts(components):
        layers = adapter_layers(part.root)
        names = saved_names(part, components.family, [path for path, _ in layers])
        modules.update({names[path]: layer for path, layer in layers})
    return modules


@pytest.fixture(scope="module")
def sd15_lora(full_sd15, tmp_path_factory):
    """A LoRA on every targetable layer of the full SD1.5 file, plus Booth's own patched weights for
    CHECKED_MODULES (apply_lora on the file's fp16 values) and the weights before patching."""
    components = load_components(full_sd15)
    params = add_lora(components, EVERY_LAYER, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for up in params[1::2]:  # peft starts every up matrix at zero: a no-op LoRA
            up.copy_(torch.randn(up.shape, generator=generator) * 0.1)
    path = save_lora(components, EVERY_LAYER, tmp_path_factory.mktemp("lora") / "every_layer.safetensors")
    remove_lora(components)
    lora = read_lora(path)
    names = sorted(lora.modules)
    checked = [next(name for name in names if name.endswith(suffix)) for suffix in CHECKED_MODULES]
    index = name_index(components)
    before = {name: index[name][1].weight.detach().float().clone() for name in checked}
    assert apply_lora(components, lora) == []
    after = {name: index[name][1].weight.detach().float().clone() for name in checked}
    return {"path": path, "names": names, "before": before, "after": after}


@pytest.fixture(scope="module")
def sd15_in_comfyui(full_sd15, sd15_lora, tmp_path_factory):
    """One ComfyUI run: load the SD1.5 file, sample without and with the LoRA, read patched weights."""
    weights = tmp_path_factory.mktemp("comfy") / "patched.safetensors"
    report = run_probe("sample", "--ckpt", full_sd15, "--lora", sd15_lora["path"], "--steps", 1,
                       "--weights-of", *sd15_lora["before"], "--weights-out", weights)
    report["patched_weights"] = load_file(str(weights))
    return report


def test_comfyui_detects_full_sd15_without_key_warnings_and_samples(sd15_in_comfyui):
    report = sd15_in_comfyui
    assert (report["model_config"], report["model_class"], report["prediction"]) == ("SD15", "BaseModel", "EPS")
    # What ComfyUI deliberately ignores (position ids, logit scale), it logs at debug level, as for real files.
    assert warnings_in(report["load_log"]) == []
    image = report["image"]
    assert image["shape"] == [1, 64, 64, 3] and image["finite"]
    assert 0.0 < image["mean"] < 1.0 and image["std"] > 0.0


def test_comfyui_applies_every_module_of_a_booth_lora(sd15_in_comfyui, sd15_lora):
    lora = sd15_in_comfyui["lora"]
    names = sd15_lora["names"]
    unet_modules = sum(name.startswith("lora_unet_") for name in names)
    assert lora["log"] == []  # no "lora key not loaded" and no "NOT LOADED"
    assert lora["tensors"] == 3 * len(names)  # down, up, alpha
    assert (lora["unet_patched"], lora["clip_patched"]) == (unet_modules, len(names) - unet_modules)
    assert lora["image"]["finite"]
    assert lora["mean_abs_pixel_diff"] > 1.0  # 0..255 scale
    for name, booth in sd15_lora["after"].items():
        comfy = sd15_in_comfyui["patched_weights"][name]
        before = sd15_lora["before"][name]
        assert (comfy - before).abs().max() > 100 * (comfy - booth).abs().max(), name
        torch.testing.assert_close(comfy, booth, rtol=2e-3, atol=2e-4, msg=name)


def _weightless_components(family: str) -> SDComponents:
    """The full architecture on the meta device: names and shapes without GBs of weights."""
    config = architecture(family)
    encoders = [make_text_encoder(text, spec.with_projection, empty=True)
                for spec, text in zip(FAMILIES[family].text_encoders, config["text_encoders"])]
    return SDComponents(family, "epsilon", make_unet(config["unet"], empty=True), make_vae(config["vae"], empty=True),
                        encoders, [], None)


@pytest.mark.parametrize("family", sorted(COMFY_CONFIG))
def test_full_size_lora_names_map_to_the_same_layers_in_comfyui(family, tmp_path):
    components = _weightless_components(family)
    checkpoint_shapes = {key: list(value.shape) for key, value in to_original_state_dict(components).items()}
    add_lora(components, EVERY_LAYER)
    modules = saved_modules(components)
    lora_shapes = {}
    for name, layer in modules.items():
        lora_shapes.update({f"{name}.{DOWN}": list(layer.lora_A[ADAPTER].weight.shape),
                            f"{name}.{UP}": list(layer.lora_B[ADAPTER].weight.shape), f"{name}.{ALPHA}": []})
    (tmp_path / "checkpoint.json").write_text(json.dumps(checkpoint_shapes))
    (tmp_path / "lora.json").write_text(json.dumps(lora_shapes))

    report = run_probe("keymap", "--checkpoint-shapes", tmp_path / "checkpoint.json",
                       "--lora-shapes", tmp_path / "lora.json")

    assert report["model_config"] == COMFY_CONFIG[family]
    assert warnings_in(report["unet_log"]) == []
    # ComfyUI's CLIP loader itself ignores these two when missing (real checkpoints lack them).
    assert [k for k in report["clip_missing"] if "logit_scale" not in k and "text_projection" not in k] == []
    assert report["clip_unexpected"] == []
    assert report["lora_log"] == []
    unmapped = [name for name, target in report["targets"].items() if target is None]
    assert unmapped == []
    assert report["patched"] == len(set(report["targets"].values())) == len(modules)
    wrong_shape = {name: (report["target_shapes"][name], list(layer.get_base_layer().weight.shape))
                   for name, layer in modules.items()
                   if core_shape(report["target_shapes"][name]) != core_shape(layer.get_base_layer().weight.shape)}
    assert wrong_shape == {}


def test_checkpoint_saved_by_comfyui_reads_in_booth(full_sd15, tmp_path):
    resaved = tmp_path / "saved_by_comfyui.safetensors"
    report = run_probe("resave", "--ckpt", full_sd15, "--out", resaved)
    assert report["model_config"] == "SD15"

    described = describe_checkpoint(resaved)
    assert (described["family"], described["variant"]) == ("sd15", "full size")
    assert sum(described["parameters"][part] for part in ("unet", "vae", "text_encoder")) == pytest.approx(
        1.066e9, rel=0.01)

    converted = convert_checkpoint(resaved, tmp_path / "fp16.safetensors", dtype=torch.float16)
    original, theirs = load_file(str(full_sd15)), load_file(str(converted))
    shared = [key for key in original if original[key].is_floating_point() and key in theirs]
    assert len(shared) > 0.95 * len(original)
    assert [key for key in shared if not torch.equal(original[key], theirs[key])] == []
    del original, theirs

    mine, from_comfy = load_components(full_sd15), load_components(resaved)
    for part in ("unet", "vae"):
        ours, saved = getattr(mine, part).state_dict(), getattr(from_comfy, part).state_dict()
        assert [k for k in ours if not torch.equal(ours[k].float(), saved[k].float())] == [], part
    ours, saved = mine.text_encoders[0].state_dict(), from_comfy.text_encoders[0].state_dict()
    assert [k for k in ours if not torch.equal(ours[k].float(), saved[k].float())] == []


def test_booth_loads_as_a_custom_node_pack(tmp_path):
    if not (REPO / "__init__.py").is_file():
        pytest.skip("the pack has no __init__.py yet, so ComfyUI has nothing to load")
    installed = tmp_path / "custom_nodes" / "booth"
    installed.parent.mkdir()
    installed.symlink_to(REPO, target_is_directory=True)

    report = run_probe("nodes", "--pack", installed)

    assert report["loaded"] and report["warnings"] == []
    assert report["nodes"], "the pack registered no nodes"
    assert [name for name in report["nodes"] if not name.startswith("Booth")] == []
    assert [name for name, label in report["display_names"].items() if not (label or "").startswith("Booth")] == []
    assert {name: inputs for name, inputs in report["required_inputs"].items() if isinstance(inputs, str)} == {}
