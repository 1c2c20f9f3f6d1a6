"""Run one contender in its own process and measure it: steady-state seconds per step, the
process's own peak resident memory (from ``wait4``, so no other run's peak is mixed in), the peak
GPU memory it reports, wall time and the size of what it wrote."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..errors import BoothError
from .contenders import Contender


def measure(contender: Contender, folder: Path, warmup: int, env: dict[str, str], lock: Path | None = None,
            profile: str | None = None) -> dict:
    """Run ``contender`` (its log and step record go to ``folder``) and return its figures.

    The first ``warmup`` steps are excluded from the per-step time (allocator growth, lazy
    initialisation). ``lock``: a file held exclusively while the process runs, so benchmarks
    sharing a machine never measure at the same time. ``profile``: ``AFTER:COUNT`` steps to profile
    (the profiler slows them, so a profiled run's times are not the benchmark's).
    """
    if not hasattr(os, "wait4"):
        raise BoothError("the benchmark needs os.wait4 (Linux or macOS) to read each run's own peak memory.")
    folder.mkdir(parents=True, exist_ok=True)
    record, log = folder / "steps.json", folder / "log.txt"
    record.unlink(missing_ok=True)
    with _held(lock), log.open("w", encoding="utf-8") as output:
        started = time.perf_counter()
        process = subprocess.Popen(contender.argv(record, profile), cwd=_repo_root(), env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
    rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024  # Linux reports KiB
    steps = json.loads(record.read_text()) if record.is_file() else {"step_ends": [], "cuda_peak_bytes": None}
    ends = steps["step_ends"]
    durations = [b - a for a, b in zip(ends[max(0, warmup - 1):], ends[max(1, warmup):])]
    result = {"trainer": contender.name, "returncode": process.returncode, "wall_s": round(wall, 2),
              "steps_done": len(ends), "step_seconds": [round(d, 4) for d in durations],
              "s_per_step": statistics.median(durations) if durations else None,
              "peak_rss_bytes": int(rss), "peak_vram_bytes": steps["cuda_peak_bytes"],
              "output_bytes": _size(contender.output), "log": str(log)}
    if process.returncode != 0 or not durations:
        killed = (f"killed by signal {-process.returncode} (9: most likely the out-of-memory killer) after "
                  f"{len(ends)} steps\n" if process.returncode < 0 else "")
        result["error"] = killed + _tail(log)
    return result


@contextlib.contextmanager
def _held(lock: Path | None):
    if lock is None:
        yield
        return
    import fcntl

    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _repo_root() -> Path:
    """The folder holding the ``trainers`` package, so ``python -m trainers`` resolves in the child."""
    return Path(__file__).resolve().parents[2]


def _size(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*.safetensors"))
    return None


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
