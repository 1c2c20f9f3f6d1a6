"""Shared fixtures: random-weight checkpoints built once per test session (nothing is downloaded)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

FAMILIES = ("sd15", "sd2", "sdxl")


@pytest.fixture
def keep_signal_handlers():
    """The CLI installs SIGINT/SIGTERM handlers for its run; give pytest its own back afterwards."""
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def noise_images(tmp_path) -> Path:
    """A folder of two 64 px noise pictures: enough for a training run to start."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        pixels = np.random.default_rng(index).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are all overhead: one intra-op thread is several times faster than two on 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pack():
    """The repository imported the way ComfyUI imports a custom-node pack: as a package under an
    arbitrary folder name (so only relative imports work inside it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("booth_pack_under_test", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_checkpoint(model_dir):
    """``tiny_checkpoint(family)`` -> path of a seeded tiny fp32 checkpoint of that family."""
    from trainers.checkpoint.test_models import make_test_checkpoint

    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = make_test_checkpoint(family, model_dir / f"{family}_tiny.safetensors", variant="tiny", seed=1)
        return made[family]

    return get


@pytest.fixture(scope="session")
def full_sd15(model_dir) -> Path:
    """The full SD1.5 architecture (1.07 B parameters) with random weights, stored in fp16."""
    import torch

    from trainers.checkpoint.test_models import make_test_checkpoint

    return make_test_checkpoint("sd15", model_dir / "sd15_full.safetensors", seed=0, dtype=torch.float16)
