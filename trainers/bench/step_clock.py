"""Run a Python program and record when each optimiser step finished (standalone: torch only).

Every trainer compared by the benchmark (Booth's CLI, diffusers' example scripts, ComfyUI's
built-in node) ends a training step in ``torch.optim.Optimizer.step``, so one global post-step
hook times all of them the same way without touching their code. Usage::

    python step_clock.py RECORD.json [-m module | script.py] [args...]

RECORD.json gets ``step_ends`` (seconds since this process started), the peak CUDA memory if a GPU
was used, and the exit status; it is written even if the program fails or calls ``sys.exit``.
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


def _after_step(optimizer, args, kwargs) -> None:
    _STEP_ENDS.append(time.perf_counter() - _START)


def _write_record(path: str) -> None:
    record = {"step_ends": _STEP_ENDS, "pid": os.getpid(),
              "cuda_peak_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None}
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    os.replace(temp, path)


def main() -> None:
    record, target, *rest = sys.argv[1:]
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
