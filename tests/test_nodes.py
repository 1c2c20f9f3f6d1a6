"""The ComfyUI node layer without ComfyUI: registration, cheap import, widgets, the image loader."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pack():
    """Import the repository the way ComfyUI does: as a package under an arbitrary folder name."""
    spec = importlib.util.spec_from_file_location("booth_pack_under_test", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_import_is_cheap_and_pulls_no_model_libraries(tmp_path):
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "custom_nodes" / "Booth-any-name").symlink_to(ROOT, target_is_directory=True)
    probe = ("import importlib.util, json, sys, time, torch\n"
             "t = time.perf_counter()\n"
             f"spec = importlib.util.spec_from_file_location('x', r'{tmp_path}/custom_nodes/Booth-any-name/__init__.py',"
             f" submodule_search_locations=[r'{tmp_path}/custom_nodes/Booth-any-name'])\n"
             "m = importlib.util.module_from_spec(spec); sys.modules['x'] = m; spec.loader.exec_module(m)\n"
             "print(json.dumps({'seconds': time.perf_counter() - t, 'nodes': sorted(m.NODE_CLASS_MAPPINGS),"
             " 'heavy': sorted(k for k in sys.modules if k.split('.')[0] in ('diffusers', 'transformers', 'peft',"
             " 'accelerate', 'matplotlib'))}))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["heavy"] == []
    assert info["seconds"] < 2.0  # torch is already imported by ComfyUI; the pack itself adds ~0.1 s
    assert {"BoothLoadInstanceImages", "BoothTrainLoRA"} <= set(info["nodes"])


def test_nodes_are_well_formed(pack):
    assert pack.WEB_DIRECTORY == "./web"
    builtin_names = {"Train LoRA", "Load LoRA", "Save LoRA Weights", "Load Image Dataset from Folder"}
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert key.startswith("Booth") and pack.NODE_DISPLAY_NAME_MAPPINGS[key] not in builtin_names
        assert cls.CATEGORY.startswith("Booth/") and callable(getattr(cls, cls.FUNCTION))
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        inputs = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for name, spec in inputs.get(group, {}).items():
                assert spec[1].get("tooltip") or name in ("lr_scheduler", "warmup_steps"), f"{key}.{name} lacks a tooltip"


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
