"""One benchmark run: Booth and every reference available, alternating, on the same workload.

Order within a round rotates, so no trainer always runs first (cold page cache) or last (a warm
machine); each run is its own process, so each peak memory figure is that trainer's alone.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import BoothError
from ..files import atomic_write_text
from . import contenders
from .arithmetic import checkpoint_architecture, matmul_peak_gflops, training_step_flops, unet_forward_flops
from .measure import measure
from .report import profile_table, ratios, summarize, table


@dataclass
class BenchOptions:
    work: contenders.Workload
    out_dir: Path
    rounds: int = 1
    warmup: int = 2  # steps left out of the per-step time
    image_count: int = 4
    comfyui: Path | None = None  # a ComfyUI folder with its .venv
    diffusers_source: Path | None = None  # a diffusers source checkout (its examples/ are run, not copied)
    lock: Path | None = None
    python: str = field(default_factory=lambda: sys.executable)
    diffusers_python: str | None = None  # diffusers' scripts need torchvision, which Booth does not
    profile: bool = False  # one more run each, under torch.profiler: where the step's time goes


def run_bench(options: BenchOptions, say: Callable[[str], None] = print) -> dict:
    """Measure every available trainer ``options.rounds`` times, alternating; write ``bench.json`` and
    ``table.md`` into ``options.out_dir`` and return the report."""
    work, out = options.work, Path(options.out_dir).resolve()
    if work.steps <= options.warmup + 1:
        raise BoothError(f"steps ({work.steps}) must exceed warmup ({options.warmup}) by at least 2 so that "
                         "steady-state steps are timed.")
    work.base = Path(work.base).resolve()
    architecture = checkpoint_architecture(str(work.base))  # refuses a missing or foreign file before any run
    out.mkdir(parents=True, exist_ok=True)
    work.images = write_images(out / "images", options.image_count, work.resolution, work.seed)
    env = child_env()
    makers = _contender_makers(options, out, env, say)
    say(f"measuring {', '.join(makers)} for {options.rounds} round(s) of {work.steps} steps")
    peak = matmul_peak_gflops()
    runs = []
    for number in range(options.rounds):
        names = list(makers)
        names = names[number % len(names):] + names[:number % len(names)]
        for name in names:
            folder = out / "runs" / f"{name}_{number}"
            result = measure(makers[name](folder), folder, options.warmup, env, options.lock)
            runs.append({"round": number, **result})
            say(f"round {number} {name}: " + (f"{result['s_per_step']:.2f} s/step, peak RSS "
                                              f"{result['peak_rss_bytes'] / 1e9:.2f} GB" if not result.get("error")
                                              else f"failed (see {result['log']})"))
    peak = max(peak, matmul_peak_gflops())
    forward = unet_forward_flops(architecture, work.resolution, work.batch_size)
    flops = training_step_flops(forward, trains_base_weights=work.method == "dreambooth")
    summary = summarize(runs, flops, peak)
    ratio = ratios(runs)
    report = {"machine": _machine(peak), "workload": _jsonable(asdict(work)),
              "rounds": options.rounds, "warmup_steps": options.warmup,
              "unet_forward_flops": forward, "flops_per_step": flops,
              "summary": summary, "booth_ratio": ratio, "runs": runs}
    text = table(summary, ratio)
    if options.profile:
        report["profiles"] = _profiles(makers, options, out, env, say)
        text += "\n\nWhere a step's time goes (torch.profiler, self time by kind of work):\n\n"
        text += profile_table(report["profiles"])
    atomic_write_text(out / "bench.json", json.dumps(report, indent=1))
    atomic_write_text(out / "table.md", text + "\n")
    say(text)
    return report


def _profiles(makers: dict, options: BenchOptions, out: Path, env: dict, say) -> dict[str, dict]:
    """Profile each trainer's steady-state steps in a run of its own, after the timed rounds."""
    window = f"{options.warmup}:{options.work.steps - options.warmup}"
    profiles = {}
    for name, make in makers.items():
        folder = out / "profiles" / name
        result = measure(make(folder), folder, options.warmup, env, options.lock, profile=window)
        written = folder / "steps.profile.json"
        if result.get("error") or not written.is_file():
            say(f"profile of {name} failed (see {result['log']})")
            continue
        profiles[name] = json.loads(written.read_text())
        say(f"profiled {name}: {folder / 'steps.profile.txt'}")
    return profiles


def _contender_makers(options: BenchOptions, out: Path, env: dict, say) -> dict[str, Callable[[Path], contenders.Contender]]:
    work = options.work
    makers = {"booth": lambda folder: contenders.booth(work, options.python, folder)}
    if options.comfyui is not None:
        if work.method != "lora":
            say("ComfyUI's built-in trainer only trains LoRAs; left out of a full fine-tune benchmark")
        else:
            root = Path(options.comfyui).resolve()
            makers["comfyui"] = lambda folder: contenders.comfyui(work, root, folder)
    if options.diffusers_source is not None:
        source = Path(options.diffusers_source).resolve()
        if not (source / "examples" / "dreambooth").is_dir():
            raise BoothError(f"{source} has no examples/dreambooth; pass the root of a diffusers source checkout.")
        if work.diffusers_model is None:
            work.diffusers_model = _diffusers_folder(work.base, out / "diffusers_model", options.python, env)
        makers[f"diffusers_{'lora' if work.method == 'lora' else 'full'}"] = (
            lambda folder: contenders.diffusers(work, source, options.diffusers_python or options.python, folder))
    return makers


def _diffusers_folder(base: Path, folder: Path, python: str, env: dict) -> Path:
    """Convert in a child process: the parent stays small, and its memory does not count anywhere."""
    import subprocess

    subprocess.run([python, "-m", "trainers.bench.diffusers_folder", str(base), str(folder)], check=True,
                   cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True)
    return folder


def write_images(folder: Path, count: int, size: int, seed: int) -> Path:
    """Synthetic subject photos at the training size (a coloured disc on a gradient), the same for all."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    for index in range(count):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        background = np.stack([x, y, 1 - x], axis=-1) * rng.uniform(80, 200, 3)
        disc = ((x - cx) ** 2 + (y - cy) ** 2 < r * r)[..., None] * rng.uniform(60, 255, 3)
        pixels = np.where(disc > 0, disc, background).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"subject_{index}.png")
    return folder


def child_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
               DIFFUSERS_VERBOSITY="error", TRANSFORMERS_VERBOSITY="error")
    env.pop("PYTHONPATH", None)
    return env


def _machine(matmul_gflops: float) -> dict:
    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "matmul_peak_gflops": round(matmul_gflops, 1)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value
