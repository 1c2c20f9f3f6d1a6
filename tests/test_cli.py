"""The command line as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainers.files import load_tensors

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainers", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_every_verb_has_help():
    top = run("--help")
    assert top.returncode == 0
    verbs = [line.split()[0] for line in top.stdout.split("positional arguments:")[1].splitlines()[2:]
             if line.startswith("    ") and not line.startswith("     ")]
    assert {"inspect", "convert", "make-test-model"} <= set(verbs)
    for verb in verbs:
        result = run(verb, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout, verb


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd15", "sd2", "sdxl"])
def test_make_test_model_then_inspect(family, tmp_path):
    out = tmp_path / f"{family}.safetensors"
    made = run("make-test-model", "--family", family, "--tiny", "--seed", "3", "--out", str(out))
    assert made.returncode == 0, made.stderr
    info = json.loads(run("inspect", str(out), "--json").stdout)
    assert info["family"] == family and info["variant"] == "tiny test model"
    assert info["parameters"]["unet"] > 1e6 and info["size_bytes"] == out.stat().st_size
    again = tmp_path / "again.safetensors"
    run("make-test-model", "--family", family, "--tiny", "--seed", "3", "--out", str(again))
    first, meta_first = load_tensors(out)
    second, meta_second = load_tensors(again)
    assert meta_first == meta_second and all(torch.equal(first[k], second[k]) for k in first)  # seeded


def test_convert_is_bit_exact_and_casts(tiny_checkpoint, tmp_path):
    source = tiny_checkpoint("sd2")
    same = tmp_path / "same.safetensors"
    assert run("convert", str(source), str(same)).returncode == 0
    a, meta_a = load_tensors(source)
    b, meta_b = load_tensors(same)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a) and meta_a == meta_b
    half = tmp_path / "half.safetensors"
    assert run("convert", str(source), str(half), "--dtype", "fp16").returncode == 0
    h, _ = load_tensors(half)
    assert h["model.diffusion_model.out.2.weight"].dtype == torch.float16
    refused = run("convert", str(source), str(half))
    assert refused.returncode == 2 and "already exists" in refused.stderr and "Traceback" not in refused.stderr


def test_convert_ckpt_to_safetensors_and_drop_ema(tiny_checkpoint, tmp_path):
    from trainers.checkpoint.loader import ema_key

    state, _ = load_tensors(tiny_checkpoint("sd15"))
    ema = {ema_key(k): v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    ckpt = tmp_path / "old model.ckpt"
    torch.save({"state_dict": {**state, **ema}}, ckpt)
    out = tmp_path / "new.safetensors"
    assert run("convert", str(ckpt), str(out), "--drop-ema").returncode == 0
    converted, _ = load_tensors(out)
    assert set(converted) == set(state) and all(torch.equal(converted[k], state[k]) for k in state)


def test_user_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("nope")
    result = run("inspect", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr and str(bad) in result.stderr
