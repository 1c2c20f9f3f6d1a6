"""``python -m trainers bench`` (Booth against other trainers, side by side, in one run) and ``scaling``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _workload(args: argparse.Namespace, **extra):
    """The workload every run trains, from the options ``_workload_options`` declares."""
    from .contenders import Workload

    return Workload(base=Path(args.base), images=Path(), method=args.method, steps=args.steps,
                    resolution=args.resolution, batch_size=args.batch_size, rank=args.rank, precision=args.precision,
                    **extra)


def cmd_bench(args: argparse.Namespace) -> int:
    from .compare import BenchOptions, run_bench

    work = _workload(args, diffusers_model=args.diffusers_model, booth_sets=list(args.booth_set or []))
    comfyui = args.comfyui or os.environ.get("COMFYUI_PATH") or None
    options = BenchOptions(work, Path(args.out_dir), rounds=args.rounds, warmup=args.warmup,
                           image_count=args.images, comfyui=Path(comfyui) if comfyui and not args.no_comfyui else None,
                           diffusers_source=args.diffusers, lock=args.lock,
                           profile=args.profile)
    if args.diffusers_python:
        options.diffusers_python = str(args.diffusers_python)
    run_bench(options)
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    from .scaling import FACTORS, ScalingOptions, run_scaling

    values = {factor: getattr(args, f"{factor}_values") for factor in FACTORS if getattr(args, f"{factor}_values")}
    options = ScalingOptions(_workload(args), Path(args.out_dir), values, image_count=args.images, warmup=args.warmup,
                             lock=args.lock)
    run_scaling(options)
    return 0


def add_commands(verbs) -> None:
    p = verbs.add_parser("bench", help="time Booth against ComfyUI's and diffusers' trainers on one workload",
                         description="Runs Booth and every reference given (ComfyUI's built-in Train LoRA node, "
                                     "diffusers' DreamBooth example scripts) alternately, each in its own process, "
                                     "on the same model, images and settings; prints a side-by-side table and "
                                     "writes bench.json and table.md to --out-dir.")
    _workload_options(p, "outputs/bench", steps=6, warmup=2)
    p.add_argument("--rounds", type=int, default=1, help="how many times each trainer runs (alternating)")
    p.add_argument("--comfyui", type=Path, help="ComfyUI folder with its .venv (default: $COMFYUI_PATH)")
    p.add_argument("--no-comfyui", action="store_true", help="leave ComfyUI out even if COMFYUI_PATH is set")
    p.add_argument("--diffusers", type=Path, help="a diffusers source checkout; its examples/dreambooth scripts run")
    p.add_argument("--diffusers-python", type=Path,
                   help="Python to run diffusers' scripts with (they need torchvision; default: this one)")
    p.add_argument("--diffusers-model", type=Path,
                   help="diffusers-format folder of --base (default: converted into --out-dir once)")
    p.add_argument("--booth-set", action="append", metavar="NAME=VALUE", help="extra Booth config override")
    p.add_argument("--profile", action="store_true",
                   help="then run each trainer once more under torch.profiler and print where its step time goes")
    p.set_defaults(run=cmd_bench)

    p = verbs.add_parser("scaling", help="how Booth's step time and memory grow with resolution, rank, batch, images",
                         description="Varies one setting at a time around a base point (--resolution, --rank, "
                                     "--batch-size, --images), each point its own timed run; writes scaling.json, "
                                     "a table (scaling.md) and a plot (scaling.png) to --out-dir.")
    _workload_options(p, "outputs/scaling", steps=4, warmup=1)
    p.add_argument("--resolution-values", type=int, nargs="+", metavar="PX", help="e.g. 256 512 768")
    p.add_argument("--rank-values", type=int, nargs="+", metavar="R", help="e.g. 4 32 128")
    p.add_argument("--batch-size-values", type=int, nargs="+", metavar="B", help="e.g. 1 2 4")
    p.add_argument("--image-count-values", type=int, nargs="+", metavar="N", help="e.g. 4 16 64")
    p.set_defaults(run=cmd_scaling)


def _workload_options(p: argparse.ArgumentParser, out_dir: str, steps: int, warmup: int) -> None:
    """What every timed run trains (bench: the shared workload; scaling: the base point)."""
    p.add_argument("--base", required=True, help="single-file SD1.x/SD2.x checkpoint (.safetensors)")
    p.add_argument("--out-dir", default=out_dir)
    p.add_argument("--method", choices=("lora", "dreambooth"), default="lora",
                   help="lora, or dreambooth for a full UNet fine-tune (no prior preservation either way)")
    p.add_argument("--steps", type=int, default=steps, help="steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=warmup, help="first steps left out of the per-step time")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--images", type=int, default=4, help="synthetic training images to write")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="training precision (half precision needs a GPU)")
    p.add_argument("--lock", type=Path, help="file locked while each run executes (machines shared by benchmarks)")
