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
            made[family] = make_test_checkpoint(family, model_dir / f"{family}_tiny.safetensors", tiny=True, seed=1)
        return made[family]

    return get


@pytest.fixture(scope="session")
def full_sd15(model_dir) -> Path:
    """The full SD1.5 architecture (1.07 B parameters) with random weights, stored in fp16."""
    import torch

    from trainers.checkpoint.test_models import make_test_checkpoint

    return make_test_checkpoint("sd15", model_dir / "sd15_full.safetensors", seed=0, dtype=torch.float16)
