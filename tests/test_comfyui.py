"""Booth's files in a real ComfyUI, and ComfyUI's files in Booth.

ComfyUI runs in its own Python (a subprocess running comfy_probe.py, which reports what ComfyUI
did as JSON); the assertions are here. Skipped unless COMFYUI_PATH names a ComfyUI checkout.
COMFYUI_PYTHON picks its interpreter (default: the checkout's .venv, else this Python).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from comfy_checkout import COMFYUI, IS_CHECKOUT, SKIP_REASON, comfy_python
from comfy_probe import RESULT_PREFIX
from file_systems import read_only_folder
from trainers.checkpoint.components import SDComponents
from trainers.checkpoint.convert import convert_checkpoint
from trainers.checkpoint.families import FAMILIES, architecture
from trainers.checkpoint.inspect import describe_checkpoint
from trainers.checkpoint.loader import load_components
from trainers.checkpoint.modules import make_text_encoder, make_unet, make_vae
from trainers.checkpoint.writer import to_original_state_dict
from trainers.files import read_safetensors_header
from trainers.lora import UNET_TARGETS, LoraSettings, add_lora, apply_lora, read_lora, remove_lora, save_lora, saved_layers
from trainers.lora.kohya import ALPHA, DOWN, UP
from trainers.lora.names import name_index
from trainers.lora.network import ADAPTER

PROBE = Path(__file__).with_name("comfy_probe.py")
REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.skipif(not IS_CHECKOUT, reason=SKIP_REASON)]

EVERY_LAYER = LoraSettings(rank=4, alpha=4.0, unet_targets=tuple(UNET_TARGETS), text_encoder=True)
COMFY_CONFIG = {"sd15": "SD15", "sd2": "SD20", "sdxl": "SDXL"}
# One module of each kind whose patched weight ComfyUI and Booth must agree on.
CHECKED_MODULES = ("attn2_to_k", "resnets_0_conv1", "attentions_0_proj_in", "layers_0_mlp_fc1")


def run_probe(*args: object, timeout: float = 900, probe: Path = PROBE) -> dict:
    """Run one verb of a probe script (default comfy_probe.py) inside ComfyUI and return its JSON report."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(COMFYUI), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([comfy_python(), str(probe), *map(str, args)], cwd=COMFYUI, env=env,
                          capture_output=True, text=True, timeout=timeout)
    reports = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not reports:
        pytest.fail(f"{probe.name} {args[0]} failed (exit {done.returncode}):\n{done.stderr[-6000:]}")
    return json.loads(reports[-1][len(RESULT_PREFIX):])


def warnings_in(log: list[dict]) -> list[str]:
    return [entry["message"] for entry in log if entry["level"] != "DEBUG"]


def core_shape(shape) -> tuple[int, ...]:
    """A 1x1 convolution and a linear layer hold the same matrix (ComfyUI reshapes LoRA products)."""
    return tuple(shape[:2]) if tuple(shape[2:]) == (1, 1) else tuple(shape)


def every_layer_lora(checkpoint: Path, out: Path) -> tuple[SDComponents, Path]:
    """The checkpoint's components with a LoRA on every targetable layer, saved to ``out``; its up
    matrices are random (peft starts them at zero, which would make a no-op LoRA)."""
    components = load_components(checkpoint)
    params = add_lora(components, EVERY_LAYER, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for up in params[1::2]:
            up.copy_(torch.randn(up.shape, generator=generator) * 0.1)
    return components, save_lora(components, EVERY_LAYER, out)


@pytest.fixture(scope="module")
def sd15_lora(full_sd15, tmp_path_factory):
    """A LoRA on every targetable layer of the full SD1.5 file, plus Booth's own patched weights for
    CHECKED_MODULES (apply_lora on the file's fp16 values) and the weights before patching."""
    components, path = every_layer_lora(full_sd15, tmp_path_factory.mktemp("lora") / "every_layer.safetensors")
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
    modules = saved_layers(components)
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


def install_pack(folder: Path) -> Path:
    """The repository as ComfyUI finds a pack: a folder inside custom_nodes/."""
    installed = folder / "custom_nodes" / "booth"
    installed.parent.mkdir(parents=True)
    installed.symlink_to(REPO, target_is_directory=True)
    return installed


def test_booth_loads_as_a_custom_node_pack(tmp_path):
    report = run_probe("nodes", "--pack", install_pack(tmp_path))

    assert report["loaded"] and report["warnings"] == []
    assert report["nodes"], "the pack registered no nodes"
    assert [name for name in report["nodes"] if not name.startswith("Booth")] == []
    assert [name for name, label in report["display_names"].items() if not (label or "").startswith("Booth")] == []
    assert {name: inputs for name, inputs in report["required_inputs"].items() if isinstance(inputs, str)} == {}


# ---- Booth Train LoRA run inside ComfyUI on the full SD1.5 file ----------------------------------------
# 2 steps at 64 px train in about a minute on 2 CPU cores. A learning rate well above the node's
# default makes 2 steps change the image visibly.
STEPS, RANK, RESOLUTION, LEARNING_RATE = 2, 4, 64, 1e-3
NODE_SETTINGS = LoraSettings(rank=RANK, alpha=float(RANK), unet_targets=("attention",))  # the node's default targets
LORA_NAME = "booth_test"
NODE_ID = "7"  # the probe runs the training node as node 7
# The training copy of the model is ~4 GB of float32; what stays after a run must be far less.
LEFT_BEHIND_LIMIT = 64 * 2**20


def run_train_node(full_sd15: Path, root: Path, *args: object) -> dict:
    return run_probe("train-node", "--ckpt", full_sd15, "--pack", install_pack(root), "--root", root,
                     "--steps", STEPS, "--rank", RANK, "--resolution", RESOLUTION, "--learning-rate", LEARNING_RATE,
                     "--lora-name", LORA_NAME, *args)


@pytest.fixture(scope="module")
def lora_trained_by_node(full_sd15, tmp_path_factory):
    """Method 'lora': trained, applied, sampled against the base, then run again under the same name."""
    root = tmp_path_factory.mktemp("comfy_train_lora")
    return root, run_train_node(full_sd15, root, "--method", "lora", "--compare")


@pytest.fixture(scope="module")
def cancelled_by_node(full_sd15, tmp_path_factory):
    """Two runs of 3 steps, each cancelled once the first step is done: by the interrupt flag alone,
    and by the server's progress hook raising InterruptProcessingException."""
    root = tmp_path_factory.mktemp("comfy_train_cancel")
    return root, run_train_node(full_sd15, root, "--no-train", "--cancel-by", "flag", "hook", "--cancel-steps", 3)


@pytest.fixture(scope="module")
def full_sd15_names() -> set[str]:
    """The module names save_lora writes for the node's settings on the full SD1.5 architecture."""
    components = _weightless_components("sd15")
    add_lora(components, NODE_SETTINGS)
    return set(saved_layers(components))


def lora_file_contents(path: Path) -> tuple[set[str], set[str], dict[str, str]]:
    """(module names, key suffixes, metadata) of a LoRA file, read from its header."""
    header, metadata = read_safetensors_header(path)
    names = {key.split(".", 1)[0] for key in header}
    suffixes = {key.split(".", 1)[1] for key in header}
    return names, suffixes, metadata


def memory_left_behind(run: dict) -> int:
    return run["live_tensor_bytes_after"] - run["live_tensor_bytes_before"]


def test_train_node_writes_a_kohya_lora_that_comfyui_loads_completely(lora_trained_by_node, full_sd15_names):
    root, report = lora_trained_by_node
    run = report["train"]
    assert run["error"] is None, run["error"]
    assert report["image_count"] == 3 and report["preview"]["shape"] == [3, RESOLUTION, RESOLUTION, 3]
    assert run["lora_name"] == f"{LORA_NAME}.safetensors" and report["loras"] == [run["lora_name"]]
    assert run["ui"]["text"][0].startswith(f"{LORA_NAME}.safetensors: {STEPS} steps in ")

    names, suffixes, metadata = lora_file_contents(root / "loras" / run["lora_name"])
    assert names == full_sd15_names and len(names) == 128  # q, k, v, out of 16 transformer blocks x 2 attentions
    assert suffixes == {DOWN, UP, ALPHA}
    assert (metadata["booth.method"], metadata["booth.steps"], metadata["booth.resolution"]) == ("lora", "2", "64")
    assert metadata["booth.instance_prompt"] == "a photo of sks dog" and metadata["booth.class_prompt"] == ""
    assert json.loads(metadata["booth.lora_settings"])["unet_targets"] == ["attention"]
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"], metadata["ss_base_model_version"]) == (
        "4", "4", "sd_v1")
    assert (metadata["ss_steps"], metadata["modelspec.title"]) == ("2", LORA_NAME)

    assert run["file"]["tensors"] == 3 * len(names) and run["file"]["finite"]
    assert 0 < run["file"]["max_abs_up"] <= STEPS * LEARNING_RATE * 1.01  # Adam moves each weight <= lr per step
    for loaded in (run["load_lora_for_models"], run):  # our own load, and the node's when it applied the LoRA
        log = loaded.get("log", loaded.get("lora_log"))
        assert log == []  # no "lora key not loaded", no "NOT LOADED"
        assert (loaded["unet_patched"], loaded["clip_patched"]) == (len(names), 0)
    assert report["leftover_temp_files"] == []


def test_train_node_model_output_samples_differently_and_reports_progress(lora_trained_by_node):
    _, report = lora_trained_by_node
    run = report["train"]
    compare = run["compare"]
    assert compare["base"]["finite"] and compare["trained"]["finite"]
    assert compare["trained"]["shape"] == [1, RESOLUTION, RESOLUTION, 3]
    assert compare["mean_abs_pixel_diff"] > 0.5  # 0..255 scale; about 2.8 here

    curve = run["curve"]
    batch, height, width, channels = curve["shape"]
    assert (batch, channels, curve["dtype"]) == (1, 3, "torch.float32") and height >= 64 and width >= 64
    assert 0.0 <= curve["min"] < curve["max"] <= 1.0 and curve["finite"]

    assert run["hook_calls"] == [{"value": step, "total": STEPS, "preview": False, "node": NODE_ID}
                                 for step in range(1, STEPS + 1)]
    assert not run["interrupted_flag_after"]
    assert memory_left_behind(run) < LEFT_BEHIND_LIMIT


def test_train_node_refuses_an_existing_lora_name_without_overwrite(lora_trained_by_node):
    _, report = lora_trained_by_node
    again = report["same_name_again"]
    assert again["error_type"] == "BoothError"
    assert again["error"].startswith(f"lora_name: {LORA_NAME}.safetensors already exists")
    assert "overwrite" in again["error"]
    assert again["hook_calls"] == []  # refused before any training step
    assert again["file"]["sha256"] == report["train"]["file"]["sha256"]


def test_train_node_with_a_read_only_loras_folder_fails_before_training_and_leaves_nothing(full_sd15, tmp_path):
    """models/loras on a read-only file system (as root; mode 555 otherwise): the node raises the
    one line naming the folder and the fix before it copies the model or takes a step, and writes
    nothing: no LoRA, no work folder, no temporary file."""
    loras = tmp_path / "loras"
    with read_only_folder(loras) as reason:
        report = run_train_node(full_sd15, tmp_path, "--method", "lora")
        assert report["loras"] == [] and list(loras.iterdir()) == []
    run = report["train"]
    assert run["error_type"] == "BoothError"
    assert run["error"] == (f"Cannot write to {loras} (the folder of output {LORA_NAME}.safetensors): {reason}. "
                            "Choose a folder you can write to, or free space there.")
    assert run["hook_calls"] == [] and not run["interrupted_flag_after"]
    assert list((tmp_path / "output").rglob("*")) == [] and report["leftover_temp_files"] == []
    assert memory_left_behind(run) < LEFT_BEHIND_LIMIT


@pytest.mark.parametrize("cancel_by", ["flag", "hook"])
def test_cancel_stops_after_the_step_saves_a_complete_lora_and_raises_interrupt(cancelled_by_node, cancel_by):
    root, report = cancelled_by_node
    run = report["cancelled"][cancel_by]
    assert run["error_type"] == "InterruptProcessingException"  # ComfyUI then reports the prompt as interrupted
    assert not run["interrupted_flag_after"]  # reset, so the next prompt runs
    assert run["hook_calls"] == [{"value": 1, "total": 3, "preview": False, "node": NODE_ID}]

    assert run["file"]["exists"] and run["file"]["finite"]
    names, suffixes, metadata = lora_file_contents(root / "loras" / run["lora_name"])
    assert len(names) == 128 and suffixes == {DOWN, UP, ALPHA}
    assert (metadata["booth.steps"], metadata["ss_max_train_steps"]) == ("1", "3")
    assert 0 < run["file"]["max_abs_up"] <= LEARNING_RATE * 1.01  # one optimiser step
    work = root / "output" / "booth" / Path(run["lora_name"]).stem
    with open(work / "losses.csv") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["1"]
    assert not (work / "state.pt").exists()  # the node cannot resume, so it keeps no state that claims it could

    assert memory_left_behind(run) < LEFT_BEHIND_LIMIT  # while the exception is still held
    assert report["leftover_temp_files"] == []
    assert sorted(path.name for path in (root / "loras").iterdir()) == sorted(
        r["lora_name"] for r in report["cancelled"].values())


@pytest.fixture(scope="module")
def dreambooth_lora_trained_by_node(full_sd15, tmp_path_factory):
    """Method 'dreambooth_lora' with one class image, which the node generates with the base model first."""
    root = tmp_path_factory.mktemp("comfy_train_dreambooth_lora")
    return root, run_train_node(full_sd15, root, "--method", "dreambooth_lora", "--num-class-images", 1)


def test_dreambooth_lora_node_generates_its_class_image_and_trains_with_prior(dreambooth_lora_trained_by_node,
                                                                             full_sd15_names):
    root, report = dreambooth_lora_trained_by_node
    run = report["train"]
    assert run["error"] is None, run["error"]
    names, _, metadata = lora_file_contents(root / "loras" / run["lora_name"])
    assert names == full_sd15_names
    assert (metadata["booth.method"], metadata["booth.class_prompt"]) == ("dreambooth_lora", "a photo of dog")
    assert (metadata["ss_num_reg_images"], metadata["ss_prior_loss_weight"], metadata["ss_steps"]) == ("1", "1.0", "2")

    work = root / "output" / "booth" / LORA_NAME
    assert len(list((work / "cache" / "class_images").glob("*/*.png"))) == 1
    with open(work / "losses.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["1", "2"] and all(float(row["prior_loss"]) > 0 for row in rows)

    assert run["load_lora_for_models"]["log"] == [] and run["lora_log"] == []
    assert (run["unet_patched"], run["clip_patched"]) == (len(names), 0)
    assert [call["value"] for call in run["hook_calls"]] == [1, 2]
    assert memory_left_behind(run) < LEFT_BEHIND_LIMIT
    assert report["leftover_temp_files"] == []


# ---- Booth Train DreamBooth run inside ComfyUI on the full SD1.5 file ----------------------------------
# A full UNet fine-tune in float32 on the CPU holds the weights, their gradients and two Adam moments:
# about 16 GB for SD1.5. One step at 64 px, no class images; the extracted LoRA is rank 4.
DREAMBOOTH_NAME = "booth_dreambooth_test"


@pytest.fixture(scope="module")
def dreambooth_trained_by_node(full_sd15, tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy_train_dreambooth")
    return root, run_probe("dreambooth-node", "--ckpt", full_sd15, "--pack", install_pack(root), "--root", root,
                           "--checkpoint-name", DREAMBOOTH_NAME, "--steps", 1, "--resolution", RESOLUTION,
                           "--learning-rate", LEARNING_RATE, "--extract-lora-rank", RANK)


def test_dreambooth_node_saves_a_checkpoint_that_load_checkpoint_reads_and_samples(dreambooth_trained_by_node):
    root, report = dreambooth_trained_by_node
    run = report["train"]
    assert run["error"] is None, run["error"]
    assert run["checkpoint_name"] == f"{DREAMBOOTH_NAME}.safetensors" and report["checkpoints"] == [
        run["checkpoint_name"]]
    assert run["ui"]["text"][0].startswith(f"{DREAMBOOTH_NAME}.safetensors: 1 steps in ")

    file = run["file"]
    assert (file["model_config"], file["prediction"]) == ("SD15", "EPS")
    assert warnings_in(file["load_log"]) == []  # every key where Load Checkpoint expects it
    assert [kind for kind in file["dtypes"] if kind.startswith(("F", "BF"))] == ["F16"]  # the default precision
    assert abs(file["bytes"] - run["base_bytes"]) < 0.01 * run["base_bytes"]  # the same ~2.1 GB as the fp16 base
    assert (file["metadata"]["booth.method"], file["metadata"]["booth.steps"]) == ("dreambooth", "1")
    assert file["metadata"]["modelspec.architecture"] == "stable-diffusion-v1"

    assert run["model_out"] == "SD15"  # the node's MODEL is the saved checkpoint, ready for KSampler
    compare = run["compare"]
    assert compare["trained"]["finite"] and compare["trained"]["shape"] == [1, RESOLUTION, RESOLUTION, 3]
    assert compare["mean_abs_pixel_diff"] > 0.5  # one step at 1e-3 on every UNet weight shows
    assert [call["value"] for call in run["hook_calls"]] == [1] and not run["interrupted_flag_after"]
    # Left behind: the MODEL and CLIP the node outputs (at most float32, twice the fp16 file), not the
    # training copy (float32 weights, gradients and two Adam moments: about 7 times the file).
    assert memory_left_behind(run) < 2 * file["bytes"] + LEFT_BEHIND_LIMIT
    assert report["leftover_temp_files"] == []


def test_dreambooth_node_extracts_a_lora_that_comfyui_loads(dreambooth_trained_by_node):
    root, report = dreambooth_trained_by_node
    run = report["train"]
    assert run["lora_name"] == f"{DREAMBOOTH_NAME}_lora.safetensors" and report["loras"] == [run["lora_name"]]
    assert run["lora_file"]["finite"] and run["lora_file"]["tensors"] > 0
    names, suffixes, metadata = lora_file_contents(root / "loras" / run["lora_name"])
    assert suffixes == {DOWN, UP, ALPHA} and all(name.startswith("lora_unet_") for name in names)
    assert int(metadata["ss_network_dim"]) <= RANK
