"""How Booth's step time and memory grow with resolution, LoRA rank, batch size and image count.

One factor is varied at a time around a base point (every other setting stays at the base), each
point in its own process, timed and measured like the side-by-side benchmark. The points of one
factor run back to back, so their ratios share the machine's conditions of that moment.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..errors import BoothError
from ..files import atomic_write, atomic_write_text
from . import contenders
from .arithmetic import checkpoint_architecture, training_step_flops, unet_forward_flops
from .compare import child_env, write_images
from .measure import measure
from .report import markdown

FACTORS = ("resolution", "rank", "batch_size", "image_count")
LABELS = {"resolution": "resolution (px)", "rank": "LoRA rank", "batch_size": "batch size",
          "image_count": "instance images"}


@dataclass
class ScalingOptions:
    work: contenders.Workload  # the base point
    out_dir: Path
    values: dict[str, list[int]] = field(default_factory=dict)  # factor -> values to try
    image_count: int = 4
    warmup: int = 1
    lock: Path | None = None
    python: str = field(default_factory=lambda: sys.executable)  # runs Booth's CLI for each point


def run_scaling(options: ScalingOptions, say: Callable[[str], None] = print) -> dict:
    """Measure every point, write ``scaling.json``, ``scaling.md`` and ``scaling.png``; return the report."""
    if options.work.steps <= options.warmup + 1:
        raise BoothError(f"steps ({options.work.steps}) must exceed warmup ({options.warmup}) by at least 2.")
    if not any(options.values.values()):
        raise BoothError("nothing to vary: give values for at least one factor (--resolution-values, --rank-values, "
                         "--batch-size-values, --image-count-values).")
    unknown = set(options.values) - set(FACTORS)
    if unknown:
        raise BoothError(f"unknown scaling factor(s) {sorted(unknown)}; choose from {', '.join(FACTORS)}.")
    out = Path(options.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = replace(options.work, base=Path(options.work.base).resolve())
    architecture = checkpoint_architecture(str(base.base))
    env = child_env()
    points, image_sets = [], {}
    for factor, values in options.values.items():
        for value in values:
            point = {"resolution": base.resolution, "rank": base.rank, "batch_size": base.batch_size,
                     "image_count": options.image_count, factor: value}
            name = f"{factor}_{value}"
            shape = (point["image_count"], point["resolution"])  # points that differ elsewhere share their images
            if shape not in image_sets:
                image_sets[shape] = write_images(out / "images" / f"{shape[0]}_{shape[1]}", *shape, base.seed)
            images = image_sets[shape]
            work = replace(base, images=images, resolution=point["resolution"], rank=point["rank"],
                           batch_size=point["batch_size"])
            result = measure(contenders.booth(work, options.python, out / "runs" / name), out / "runs" / name,
                             options.warmup, env, options.lock)
            flops = training_step_flops(unet_forward_flops(architecture, work.resolution, work.batch_size),
                                        trains_base_weights=work.method == "dreambooth")
            points.append({"factor": factor, "value": value, "settings": point, "flops_per_step": flops,
                           "s_per_step": result["s_per_step"], "peak_rss_bytes": result["peak_rss_bytes"],
                           "peak_vram_bytes": result["peak_vram_bytes"], "output_bytes": result["output_bytes"],
                           "error": result.get("error")})
            say(f"{name}: " + (f"{result['s_per_step']:.2f} s/step, peak {result['peak_rss_bytes'] / 1e9:.2f} GB"
                               if not result.get("error") else f"failed (see {result['log']})"))
    report = {"base": {"resolution": base.resolution, "rank": base.rank, "batch_size": base.batch_size,
                       "image_count": options.image_count, "method": base.method, "precision": base.precision},
              "points": points}
    text = scaling_table(points)
    atomic_write_text(out / "scaling.json", json.dumps(report, indent=1))
    atomic_write_text(out / "scaling.md", text + "\n")
    scaling_plot(points, out / "scaling.png")
    say(text)
    return report


def scaling_table(points: list[dict]) -> str:
    """Per point: s/step, s per image, peak memory and the factor's growth against its first value."""
    rows = [("factor", "value", "s/step", "s/image", "× first", "peak memory", "× first", "LoRA file"),
            tuple("---" for _ in range(8))]
    for factor in dict.fromkeys(point["factor"] for point in points):
        mine = [point for point in points if point["factor"] == factor]
        first = next((point for point in mine if not point["error"]), None)
        for point in mine:
            if point["error"] or first is None:
                rows.append((LABELS[factor], str(point["value"]), "failed", "", "", "", "", ""))
                continue
            memory = point["peak_vram_bytes"] or point["peak_rss_bytes"]
            first_memory = first["peak_vram_bytes"] or first["peak_rss_bytes"]
            rows.append((LABELS[factor], str(point["value"]), f"{point['s_per_step']:.2f}",
                         f"{point['s_per_step'] / point['settings']['batch_size']:.2f}",
                         f"{point['s_per_step'] / first['s_per_step']:.2f}", f"{memory / 1e9:.2f} GB",
                         f"{memory / first_memory:.2f}", f"{(point['output_bytes'] or 0) / 1e6:.1f} MB"))
    return markdown(rows)


def scaling_plot(points: list[dict], path: Path) -> Path:
    """One panel per factor: seconds per step (left axis) and peak memory (right axis), as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    factors = list(dict.fromkeys(point["factor"] for point in points))
    figure = Figure(figsize=(4 * max(1, len(factors)), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    for index, factor in enumerate(factors):
        mine = [point for point in points if point["factor"] == factor and not point["error"]]
        axes = figure.add_subplot(1, len(factors), index + 1)
        values = [point["value"] for point in mine]
        seconds = [point["s_per_step"] for point in mine]
        gigabytes = [(point["peak_vram_bytes"] or point["peak_rss_bytes"]) / 1e9 for point in mine]
        axes.plot(values, seconds, "o-", color="tab:blue")
        axes.set_xlabel(LABELS[factor])
        axes.set_ylabel("s/step", color="tab:blue")
        memory = axes.twinx()
        memory.plot(values, gigabytes, "s--", color="tab:red")
        memory.set_ylabel("peak memory (GB)", color="tab:red")
        axes.set_ylim(0, 1.15 * max(seconds, default=1))  # from zero, so a flat factor looks flat
        memory.set_ylim(0, 1.15 * max(gigabytes, default=1))
        if factor in ("rank", "image_count") and len(values) > 1:
            axes.set_xscale("log", base=2)
        axes.set_xticks(values, [str(value) for value in values])  # ticks at the measured values only
    return atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=110))
