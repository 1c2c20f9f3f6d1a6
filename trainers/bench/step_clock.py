"""Run a Python program and record when each optimiser step finished (standalone: torch only).

Every trainer compared by the benchmark (Booth's CLI, diffusers' example scripts, ComfyUI's
built-in node) ends a training step in ``torch.optim.Optimizer.step``, so one global post-step
hook times all of them the same way without touching their code. Usage::

    python step_clock.py RECORD.json [--profile AFTER:COUNT] [-m module | script.py] [args...]

RECORD.json gets ``step_ends`` (seconds since this process started), the peak CUDA memory if a GPU
was used, and the exit status; it is written even if the program fails or calls ``sys.exit``.
``--profile AFTER:COUNT`` runs ``torch.profiler`` over the COUNT steps after step AFTER and writes
where their time went, by operator and by kind of work, next to the record (``*.profile.txt`` and
``*.profile.json``), so the same split is taken the same way for every trainer.
"""

import atexit
import json
import os
import runpy
import sys
import time

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

_START = time.perf_counter()
_STEP_ENDS: list = []
_PROFILE: dict = {}

# Operator name fragments -> kind of work, first match wins (self time, so nothing counts twice).
_KINDS = (
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "softmax", "bmm", "baddbmm")),
    ("convolution", ("conv",)),
    ("matmul (linear layers)", ("addmm", "::mm", "matmul", "linear")),
    ("normalisation", ("group_norm", "layer_norm", "batch_norm")),
    ("dtype casts and copies", ("::to", "_to_copy", "copy_", "clone", "contiguous", "cat", "empty")),
    ("optimiser", ("optimizer", "adam", "_foreach", "lerp", "sqrt")),
    ("elementwise and activations", ("mul", "add", "silu", "gelu", "sub", "div", "sum", "mean", "pow", "neg",
                                     "exp", "fill", "where", "sigmoid", "tanh", "rsub")),
)


def _kind(name: str) -> str:
    lowered = name.lower()
    for kind, fragments in _KINDS:
        if any(fragment in lowered for fragment in fragments):
            return kind
    return "other"


def _after_step(optimizer, args, kwargs) -> None:
    _STEP_ENDS.append(time.perf_counter() - _START)
    if _PROFILE and len(_STEP_ENDS) == _PROFILE["after"]:
        _start_profiler()
    elif _PROFILE.get("profiler") is not None and len(_STEP_ENDS) == _PROFILE["after"] + _PROFILE["count"]:
        profiler, _PROFILE["profiler"] = _PROFILE["profiler"], None
        profiler.__exit__(None, None, None)
        _write_profile(profiler, _PROFILE["count"], _PROFILE["record"])


def _start_profiler() -> None:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    _PROFILE["profiler"] = torch.profiler.profile(activities=activities)
    _PROFILE["profiler"].__enter__()


def _write_profile(profiler, steps: int, record: str) -> None:
    """Per-step self time by operator and by kind of work (CPU time; device time too on a GPU)."""
    device = torch.cuda.is_available()
    events = profiler.key_averages()
    per_step = {}
    for event in events:
        seconds = (event.self_device_time_total if device else event.self_cpu_time_total) / 1e6 / steps
        if seconds > 0:
            per_step[event.key] = per_step.get(event.key, 0.0) + seconds
    kinds: dict = {}
    for name, seconds in per_step.items():
        kind = _kind(name)
        kinds[kind] = kinds.get(kind, 0.0) + seconds
    total = sum(per_step.values()) or 1.0
    lines = [f"{'device' if device else 'CPU'} self time per step over {steps} steps: {total:.3f} s", "",
             f"{'kind of work':<32}{'s/step':>9}{'share':>8}"]
    lines += [f"{kind:<32}{seconds:>9.3f}{seconds / total:>8.1%}"
              for kind, seconds in sorted(kinds.items(), key=lambda item: -item[1])]
    lines += ["", f"{'operator':<48}{'s/step':>9}{'share':>8}"]
    lines += [f"{name[:47]:<48}{seconds:>9.3f}{seconds / total:>8.1%}"
              for name, seconds in sorted(per_step.items(), key=lambda item: -item[1])[:40]]
    base = record[:-5] if record.endswith(".json") else record
    _write_atomic(f"{base}.profile.txt", "\n".join(lines) + "\n")
    _write_atomic(f"{base}.profile.json", json.dumps({"steps": steps, "device": device, "seconds_per_step": total,
                                                      "kinds": kinds, "operators": per_step}, indent=1))


def _write_record(path: str) -> None:
    record = {"step_ends": _STEP_ENDS, "pid": os.getpid(),
              "cuda_peak_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None}
    _write_atomic(path, json.dumps(record))


def _write_atomic(path: str, text: str) -> None:
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)


def main() -> None:
    record, target, *rest = sys.argv[1:]
    if target == "--profile":
        window, target, *rest = rest
        after, count = (int(part) for part in window.split(":"))
        _PROFILE.update(after=after, count=count, record=record)
        if after == 0:  # no warm-up left out: profile from the first step
            _start_profiler()
    register_optimizer_step_post_hook(_after_step)
    atexit.register(_write_record, record)
    if target == "-m":
        module, *rest = rest
        sys.argv = [module, *rest]
        sys.path[0] = os.getcwd()  # as ``python -m`` does; this file's folder must not shadow anything
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *rest]
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main()
