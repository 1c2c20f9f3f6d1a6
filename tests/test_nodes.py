"""The ComfyUI node layer without ComfyUI: registration, cheap import, widgets, the image loader."""

from __future__ import annotations

import base64
import importlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_import_pulls_no_model_libraries(tmp_path):
    """What keeps ComfyUI's start-up cheap: importing the pack loads none of the model libraries (they
    take seconds; they load when a node first runs). The time itself is a benchmark figure
    (docs/benchmarks.md), not asserted: it depends on the machine."""
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "custom_nodes" / "Booth-any-name").symlink_to(ROOT, target_is_directory=True)
    probe = ("import importlib.util, json, sys, torch\n"
             f"spec = importlib.util.spec_from_file_location('x', r'{tmp_path}/custom_nodes/Booth-any-name/__init__.py',"
             f" submodule_search_locations=[r'{tmp_path}/custom_nodes/Booth-any-name'])\n"
             "m = importlib.util.module_from_spec(spec); sys.modules['x'] = m; spec.loader.exec_module(m)\n"
             "print(json.dumps({'nodes': sorted(m.NODE_CLASS_MAPPINGS),"
             " 'heavy': sorted(k for k in sys.modules if k.split('.')[0] in ('diffusers', 'transformers', 'peft',"
             " 'accelerate', 'matplotlib'))}))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["heavy"] == []
    assert {"BoothLoadInstanceImages", "BoothTrainLoRA"} <= set(info["nodes"])


# Display names of ComfyUI's own nodes that a Booth node could be mistaken for in the node search.
BUILTIN_DISPLAY_NAMES = {"Train LoRA", "Load LoRA", "Load LoRA Model", "Load LoRA (Model and CLIP)",
                         "Save LoRA Weights", "Extract and Save Lora", "Plot Loss Graph", "Load Checkpoint",
                         "Save Checkpoint", "Load Image (from Folder)", "Load Image-Text (from Folder)",
                         "Load Image Dataset from Folder", "Make Training Dataset", "CLIP Merge Simple",
                         "ModelMergeSimple"}
BUILTIN_NODE_IDS = {"TrainLoraNode", "LoraModelLoader", "SaveLoRA", "LossGraphNode", "LoraLoader",
                    "LoraLoaderModelOnly", "LoraSave", "CheckpointLoaderSimple", "CheckpointSave"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def node_inputs(cls) -> list[tuple[str, tuple]]:
    inputs = cls.INPUT_TYPES()
    return [(name, spec) for group in ("required", "optional") for name, spec in inputs.get(group, {}).items()]


def test_pack_registers_only_booth_nodes_under_the_booth_menu(pack):
    assert pack.WEB_DIRECTORY == "./web"
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        label = pack.NODE_DISPLAY_NAME_MAPPINGS[key]
        assert key.startswith("Booth") and key not in BUILTIN_NODE_IDS, key
        assert label.startswith("Booth ") and label not in BUILTIN_DISPLAY_NAMES, label
        assert cls.CATEGORY.startswith("Booth/") and cls.DESCRIPTION, key
        assert callable(getattr(cls, cls.FUNCTION)), key
    assert len(set(pack.NODE_DISPLAY_NAME_MAPPINGS.values())) == len(pack.NODE_CLASS_MAPPINGS)


def test_every_output_is_named_and_explained(pack):
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS), key
        assert all(cls.RETURN_NAMES) and all(cls.OUTPUT_TOOLTIPS), key
        assert len(set(cls.RETURN_NAMES)) == len(cls.RETURN_NAMES), key


def test_every_input_has_a_tooltip_and_every_number_sensible_bounds(pack):
    missing, unbounded = [], []
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        for name, spec in node_inputs(cls):
            options = spec[1] if len(spec) > 1 else {}
            if not options.get("tooltip"):
                missing.append(f"{key}.{name}")
            kind = spec[0] if isinstance(spec[0], str) else "COMBO"
            if kind in ("INT", "FLOAT"):
                low, high, default = options.get("min"), options.get("max"), options.get("default")
                if low is None or high is None or default is None or not low <= default <= high:
                    unbounded.append(f"{key}.{name}")
                if kind == "FLOAT" and not options.get("step"):
                    unbounded.append(f"{key}.{name} (no step)")
            if kind in WIDGET_TYPES and "default" not in options:
                unbounded.append(f"{key}.{name} (no default)")
            if kind == "COMBO" and options.get("default") is not None:
                assert options["default"] in spec[0], f"{key}.{name}: default not among the choices"
    assert missing == [], "inputs without a tooltip"
    assert unbounded == [], "numbers without default/min/max/step"


def test_seeds_stay_fixed_between_runs_in_the_front_end(pack):
    """The front end gives every INT input called seed a "control after generate" widget that
    defaults to randomize unless the input says otherwise: a re-queued training would silently
    train with another seed. Booth's seeds ask for "fixed" (the user can still pick randomize)."""
    randomized = [f"{key}.{name}" for key, cls in pack.NODE_CLASS_MAPPINGS.items() for name, spec in node_inputs(cls)
                  if spec[0] == "INT" and name in ("seed", "noise_seed")
                  and spec[1].get("control_after_generate") != "fixed"]
    assert randomized == []


def test_train_targets_match_the_core(pack):
    from trainers.lora import UNET_TARGETS

    train_module = sys.modules["booth_pack_under_test.nodes.train"]
    assert set(train_module.TARGET_CHOICES["all incl. conv (LoCon)"]) == set(UNET_TARGETS)


def _write_subject(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        array = np.full((80, 96, 3), 40 * i, dtype=np.uint8)
        array[20:60, 30:70] = (255, 0, 0)
        Image.fromarray(array).save(folder / f"img {i}.png")
    (folder / "notes.json").write_text("{}")


def test_load_instance_images_from_folder(pack, tmp_path):
    node = pack.NODE_CLASS_MAPPINGS["BoothLoadInstanceImages"]()
    _write_subject(tmp_path / "mein hund", 3)
    spec, preview, count = node.load(str(tmp_path / "mein hund"), "a photo of sks dog", 64, "center", False, True, 2)
    assert count == 3 and spec.count == 3 and spec.folder.endswith("mein hund")
    assert spec.data.resolution == 64 and spec.data.flip and spec.data.repeats == 2
    assert preview.shape == (3, 64, 64, 3) and 0 <= float(preview.min()) and float(preview.max()) <= 1


def test_load_instance_images_from_batch(pack):
    node = pack.NODE_CLASS_MAPPINGS["BoothLoadInstanceImages"]()
    batch = torch.rand(2, 72, 96, 3)
    spec, preview, count = node.load("ignored", "a photo of sks cat", 64, "center", False, False, 1, images=batch)
    assert count == 2 and spec.images is not None and spec.folder == ""
    assert preview.shape == (2, 64, 64, 3)


def test_load_instance_images_errors_name_the_widget(pack, tmp_path):
    BoothError = sys.modules["booth_pack_under_test.trainers.errors"].BoothError  # the pack's own copy
    node = pack.NODE_CLASS_MAPPINGS["BoothLoadInstanceImages"]()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BoothError, match="No images in .*empty"):
        node.load(str(tmp_path / "empty"), "a photo of sks dog", 64, "center", False, False, 1)
    with pytest.raises(BoothError, match="folder is empty"):
        node.load("  ", "a photo of sks dog", 64, "center", False, False, 1)


def test_every_node_runs_inside_the_user_error_wrapper(pack):
    """Each registered node's entry function (its FUNCTION) is the one wrapper of comfy_bridge, so no
    node can let a raw OSError reach ComfyUI's error dialog."""
    bridge = sys.modules["booth_pack_under_test.nodes.comfy_bridge"]
    wrapper_code = bridge.reports_user_errors(lambda: None).__code__
    unwrapped = [key for key, cls in pack.NODE_CLASS_MAPPINGS.items()
                 if getattr(cls, cls.FUNCTION).__code__ is not wrapper_code]
    assert unwrapped == []


def test_a_file_problem_no_check_foresaw_is_one_clear_node_message(pack, tmp_path):
    """A folder name longer than the file system allows: the operating system refuses it
    (ENAMETOOLONG) and no Booth check names it; the node raises the command line's one line, not
    the raw OSError, and keeps the OSError as the cause for ComfyUI's console log."""
    BoothError = sys.modules["booth_pack_under_test.trainers.errors"].BoothError
    node = pack.NODE_CLASS_MAPPINGS["BoothLoadInstanceImages"]()
    folder = tmp_path / ("x" * 300)
    with pytest.raises(BoothError) as raised:
        node.load(str(folder), "a photo of sks dog", 64, "center", False, False, 1)
    assert str(raised.value) == (f"{folder}: File name too long. Check that the path exists, is the right kind "
                                 "(file or folder), can be read and written by you, and that the disk has space.")
    assert isinstance(raised.value.__cause__, OSError)
    assert list(tmp_path.iterdir()) == []


def test_a_bug_in_a_node_is_not_disguised_as_a_user_error(pack):
    """Only what a user can fix becomes a message; any other exception reaches ComfyUI as itself."""
    bridge = sys.modules["booth_pack_under_test.nodes.comfy_bridge"]
    bug = KeyError("missing")

    def broken():
        raise bug

    with pytest.raises(KeyError) as raised:
        bridge.reports_user_errors(broken)()
    assert raised.value is bug


def test_sample_event_carries_a_small_jpeg_of_the_first_sample(pack):
    ui = importlib.import_module("booth_pack_under_test.nodes.ui")
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 512, 384, 3, generator=generator)  # noise: the worst case for the size
    images[0, :64, :, :] = torch.tensor([1.0, 0.0, 0.0])  # a red band on the first sample only
    event = ui.sample_event(7, images)
    assert (event["event"], event["step"]) == ("sample", 7)
    assert event["image"].startswith("data:image/jpeg;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(event["image"].split(",", 1)[1])))
    assert picture.format == "JPEG" and picture.size == (192, 256)  # longer side THUMBNAIL_EDGE, aspect kept
    red = np.asarray(picture.convert("RGB"))[4:28, 20:170].astype(int).mean(axis=(0, 1))
    assert red[0] > 230 and red[1] < 30 and red[2] < 30
    assert len(event["image"]) < 60_000  # ~36 kB for noise, less for a photo


def test_images_kept_on_the_node_are_numbered_pngs_that_never_overwrite(pack, tmp_path):
    ui = importlib.import_module("booth_pack_under_test.nodes.ui")
    curve = torch.linspace(0, 1, 40 * 60 * 3).reshape(1, 40, 60, 3)
    first = ui.write_images(curve, tmp_path, "booth_x_loss")
    second = ui.write_images(torch.cat([curve, curve]), tmp_path, "booth_x_loss")
    assert first == [{"filename": "booth_x_loss_00001_.png", "subfolder": "", "type": "temp"}]
    assert [entry["filename"] for entry in second] == ["booth_x_loss_00002_.png", "booth_x_loss_00003_.png"]
    saved = np.asarray(Image.open(tmp_path / "booth_x_loss_00001_.png"))
    assert saved.shape == (40, 60, 3)
    np.testing.assert_array_equal(saved, np.round(curve[0].numpy() * 255).astype(np.uint8))
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"booth_x_loss_0000{i}_.png" for i in (1, 2, 3)]


def booth_object_info(pack) -> dict:
    """Booth's nodes in /object_info's shape, read from the classes (no ComfyUI needed)."""
    info = {}
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        info[key] = {"input": inputs, "display_name": pack.NODE_DISPLAY_NAME_MAPPINGS[key],
                     "input_order": {group: list(inputs.get(group, {})) for group in ("required", "optional")}}
    return info


def widget_value_problem(spec: tuple, value) -> str | None:
    options = spec[1] if len(spec) > 1 else {}
    if isinstance(spec[0], list):
        return None if value in spec[0] or not spec[0] else f"{value!r} is not one of {spec[0]}"
    if spec[0] in ("INT", "FLOAT"):
        inside = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            options.get("min", value) <= value <= options.get("max", value))
        return None if inside else f"{value!r} is outside {options.get('min')}..{options.get('max')}"
    expected = {"BOOLEAN": bool, "STRING": str}.get(spec[0])
    return None if expected is None or isinstance(value, expected) else f"{value!r} is not {spec[0]}"


def test_example_workflows_fit_the_current_nodes(pack):
    """Each Booth node in example_workflows/ has one value per widget, in the order the front end
    lays them out, and every value is valid for its widget, so the templates load as shipped."""
    from comfy_server import workflow_to_prompt

    info = booth_object_info(pack)
    paths = sorted((ROOT / "example_workflows").glob("*.json"))
    assert len(paths) >= 2
    problems = []
    for path in paths:
        workflow = json.loads(path.read_text(encoding="utf-8"))
        for node in workflow["nodes"]:
            if not node["type"].startswith("Booth"):
                continue
            assert node["type"] in info, f"{path.name}: unknown node {node['type']}"
            prompt = workflow_to_prompt({"nodes": [node], "links": []}, info)  # raises on a count mismatch
            specs = {**info[node["type"]]["input"].get("required", {}), **info[node["type"]]["input"].get("optional", {})}
            for name, value in prompt[str(node["id"])]["inputs"].items():
                problem = widget_value_problem(specs[name], value)
                if problem:
                    problems.append(f"{path.name} node {node['id']} {name}: {problem}")
    assert problems == []
