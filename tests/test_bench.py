"""The benchmark's plumbing on the tiny model: real processes, real step records, real report files.
(No timings are asserted: they depend on the machine.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.bench.contenders import Contender
from trainers.bench.measure import measure
from trainers.bench.report import ratios, summarize, table
from trainers.errors import BoothError

ROOT = Path(__file__).resolve().parents[1]

TRAINING_SCRIPT = """
import sys, torch
weight = torch.nn.Parameter(torch.ones(3))
optimizer = torch.optim.SGD([weight], lr=0.1)
for _ in range(int(sys.argv[1])):
    optimizer.zero_grad()
    (weight ** 2).sum().backward()
    optimizer.step()
open(sys.argv[2], "w").write(str(weight.tolist()))
sys.exit(int(sys.argv[3]))
"""


def run_tiny(verb: str, checkpoint: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """``python -m trainers VERB`` on the tiny model at 64 px, Booth only; fails the test if it fails."""
    done = subprocess.run([sys.executable, "-m", "trainers", verb, "--base", str(checkpoint), "--out-dir", str(out),
                           "--warmup", "1", "--resolution", "64", *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_booth_only_bench_writes_json_and_table(tiny_checkpoint, tmp_path):
    out = tmp_path / "bench"
    done = run_tiny("bench", tiny_checkpoint("sd15"), out, "--steps", "4", "--images", "2", "--rank", "4",
                    "--no-comfyui")
    report = json.loads((out / "bench.json").read_text())
    [run] = report["runs"]
    assert run["trainer"] == "booth" and run["returncode"] == 0 and run["steps_done"] == 4
    assert len(run["step_seconds"]) == 3 and all(s > 0 for s in run["step_seconds"])
    lora = out / "runs" / "booth_0" / "booth_lora.safetensors"
    assert run["output_bytes"] == lora.stat().st_size
    assert 50e6 < run["peak_rss_bytes"] < 4e9  # the child's own peak, not the benchmark's
    booth = report["summary"]["booth"]
    assert booth["s_per_step"] == pytest.approx(sorted(run["step_seconds"])[1], abs=1e-3)
    assert report["flops_per_step"] == 2 * report["unet_forward_flops"] > 0
    # s_per_step is stored in milliseconds: a tiny model's ~20 ms step carries up to 5 % rounding
    assert booth["gflops"] == pytest.approx(report["flops_per_step"] / 1e9 / booth["s_per_step"], rel=0.05)
    assert report["machine"]["matmul_peak_gflops"] > 0
    assert report["workload"]["resolution"] == 64 and report["booth_ratio"] == {}
    assert len(list((out / "images").glob("*.png"))) == 2
    text = (out / "table.md").read_text()
    assert text.splitlines()[0].startswith("| trainer") and "| booth " in text and text.strip() in done.stdout


@pytest.mark.slow
def test_step_clock_times_each_optimizer_step_and_keeps_the_exit_status(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAINING_SCRIPT)
    folder, weights = tmp_path / "run", tmp_path / "weights.txt"
    contender = Contender("toy", [str(script), "5", str(weights), "0"], sys.executable, weights)
    result = measure(contender, folder, warmup=2, env={"PATH": "/usr/bin:/bin"})
    assert result["returncode"] == 0 and result["steps_done"] == 5 and len(result["step_seconds"]) == 3
    assert result["output_bytes"] == weights.stat().st_size and "error" not in result
    assert json.loads(weights.read_text()) == pytest.approx([0.8 ** 5] * 3)

    failing = Contender("toy", [str(script), "2", str(weights), "3"], sys.executable, weights)
    result = measure(failing, folder, warmup=1, env={"PATH": "/usr/bin:/bin"})
    assert result["returncode"] == 3 and result["steps_done"] == 2 and "error" in result


@pytest.mark.slow
@pytest.mark.parametrize("window", ["0:2", "2:3"])
def test_step_clock_profiles_exactly_the_steps_of_its_window(tmp_path, window):
    script = tmp_path / "train.py"
    script.write_text(TRAINING_SCRIPT)
    contender = Contender("toy", [str(script), "5", str(tmp_path / "weights.txt"), "0"], sys.executable, tmp_path)
    result = measure(contender, tmp_path / "run", warmup=1, env={"PATH": "/usr/bin:/bin"}, profile=window)
    assert result["returncode"] == 0 and result["steps_done"] == 5
    profile = json.loads((tmp_path / "run" / "steps.profile.json").read_text())
    assert profile["steps"] == int(window.split(":")[1])
    assert profile["kinds"]["optimiser"] > 0 and "Optimizer.step#SGD.step" in profile["operators"]


def test_ratios_are_taken_within_rounds():
    runs = [{"round": 0, "trainer": "booth", "s_per_step": 2.0, "peak_rss_bytes": 4e9, "peak_vram_bytes": None,
             "output_bytes": 10},
            {"round": 0, "trainer": "ref", "s_per_step": 8.0, "peak_rss_bytes": 8e9, "peak_vram_bytes": None,
             "output_bytes": 20},
            {"round": 1, "trainer": "ref", "s_per_step": 12.0, "peak_rss_bytes": 8e9, "peak_vram_bytes": None,
             "output_bytes": 20},
            {"round": 1, "trainer": "booth", "s_per_step": 4.0, "peak_rss_bytes": 4e9, "peak_vram_bytes": None,
             "output_bytes": 10}]
    ratio = ratios(runs)
    assert ratio == {"ref": {"time": pytest.approx((0.25 + 1 / 3) / 2, abs=1e-3), "time_per_round": [0.25, 0.333],
                             "peak_rss": 0.5}}
    summary = summarize(runs, flops_per_step=int(12e9), matmul_gflops=10.0)
    assert summary["booth"]["s_per_step"] == 3.0 and summary["booth"]["gflops"] == 4.0
    assert summary["booth"]["share_of_matmul_peak"] == 0.4 and summary["ref"]["s_per_step_max"] == 12.0
    lines = table(summary, ratio).splitlines()
    assert lines[2].split("|")[3].strip() == "1.00" and lines[3].split("|")[3].strip() == "0.29"


def test_too_few_steps_or_a_missing_model_is_refused(tiny_checkpoint, tmp_path):
    from trainers.bench.compare import BenchOptions, run_bench
    from trainers.bench.contenders import Workload

    options = BenchOptions(Workload(base=tiny_checkpoint("sd15"), images=tmp_path, steps=3), tmp_path, warmup=2)
    with pytest.raises(BoothError, match=r"steps \(3\) must exceed warmup \(2\)"):
        run_bench(options)
    options.work.steps, options.work.base = 6, tmp_path / "missing.safetensors"
    with pytest.raises(BoothError, match="File not found: .*missing.safetensors"):
        run_bench(options)
    assert not (tmp_path / "images").exists()  # refused before anything was written or run


def test_a_killed_run_is_reported_with_its_peak_memory():
    runs = [{"round": 0, "trainer": "booth", "s_per_step": 2.0, "peak_rss_bytes": 3e9, "peak_vram_bytes": None,
             "output_bytes": 5, "returncode": 0},
            {"round": 0, "trainer": "ref", "s_per_step": None, "peak_rss_bytes": 14e9, "peak_vram_bytes": None,
             "output_bytes": None, "returncode": -9}]
    summary = summarize(runs, flops_per_step=int(1e9), matmul_gflops=100.0)
    assert summary["ref"] == {"failed": True, "peak_rss_bytes": 14e9, "returncode": -9}
    assert ratios(runs) == {}
    row = table(summary, {}).splitlines()[3].split("|")
    assert row[2].strip() == "killed" and row[4].strip() == "14.00 GB when killed"


@pytest.mark.slow
def test_profile_splits_the_steady_steps_by_kind_of_work(tiny_checkpoint, tmp_path):
    out = tmp_path / "bench"
    done = run_tiny("bench", tiny_checkpoint("sd15"), out, "--steps", "4", "--images", "2", "--rank", "4",
                    "--no-comfyui", "--profile")
    profile = json.loads((out / "bench.json").read_text())["profiles"]["booth"]
    assert profile["steps"] == 3 and profile["device"] is False
    assert profile["kinds"]["convolution"] > 0 and profile["kinds"]["matmul (linear layers)"] > 0
    assert sum(profile["kinds"].values()) == pytest.approx(profile["seconds_per_step"], rel=1e-6)
    assert sum(profile["operators"].values()) == pytest.approx(profile["seconds_per_step"], rel=1e-6)
    text = (out / "profiles" / "booth" / "steps.profile.txt").read_text()
    assert "aten::" in text and "convolution" in text
    assert "Where a step's time goes" in done.stdout and "| convolution " in (out / "table.md").read_text()


@pytest.mark.slow
def test_scaling_varies_one_setting_at_a_time_and_writes_table_and_plot(tiny_checkpoint, tmp_path):
    out = tmp_path / "scaling"
    done = run_tiny("scaling", tiny_checkpoint("sd15"), out, "--steps", "3", "--rank-values", "2", "8",
                    "--resolution-values", "64", "128")
    report = json.loads((out / "scaling.json").read_text())
    points = {(p["factor"], p["value"]): p for p in report["points"]}
    assert set(points) == {("rank", 2), ("rank", 8), ("resolution", 64), ("resolution", 128)}
    assert points[("rank", 8)]["settings"] == {"resolution": 64, "rank": 8, "batch_size": 1, "image_count": 4}
    assert points[("resolution", 128)]["settings"]["rank"] == 8  # the base rank while resolution varies
    # 4x the pixels: 4x the convolutions, more than 4x the attention
    assert points[("resolution", 128)]["flops_per_step"] > 4 * points[("resolution", 64)]["flops_per_step"]
    assert all(p["s_per_step"] > 0 and p["peak_rss_bytes"] > 0 and not p["error"] for p in points.values())
    assert points[("rank", 8)]["output_bytes"] > points[("rank", 2)]["output_bytes"]
    from PIL import Image

    assert Image.open(out / "scaling.png").size[0] > 400
    table = (out / "scaling.md").read_text()
    assert "| LoRA rank" in table and "| resolution (px)" in table and table.strip() in done.stdout


def test_scaling_refuses_an_unknown_factor_or_nothing_to_vary(tiny_checkpoint, tmp_path):
    from trainers.bench.contenders import Workload
    from trainers.bench.scaling import ScalingOptions, run_scaling

    options = ScalingOptions(Workload(base=tiny_checkpoint("sd15"), images=tmp_path), tmp_path, {"colour": [1]})
    with pytest.raises(BoothError, match="unknown scaling factor.*colour"):
        run_scaling(options)
    options.values = {}
    with pytest.raises(BoothError, match="nothing to vary.*--resolution-values"):
        run_scaling(options)
    options.values, options.work.base = {"rank": [4]}, tmp_path / "missing.safetensors"
    with pytest.raises(BoothError, match="File not found: .*missing.safetensors"):
        run_scaling(options)
    assert not list(tmp_path.iterdir())  # refused before anything was written
