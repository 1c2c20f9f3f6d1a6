"""A comparison's outputs: image grids, charts, CSV/JSON tables and one self-contained HTML report.

The report embeds its images as base64 so it can be mailed or archived as one file. Every string
that comes from a file, its metadata or the config (prompts, labels, paths, training keys) is
HTML-escaped: a LoRA's metadata is written by whoever made the file and must not run in a browser.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from ..files import atomic_write_text
from ..formatting import format_size
from ..plots import bar_plot, image_grid, line_plot
from .compare import AXIS_LABELS, CompareResult, Entry, swept_axes
from ..config import config_to_dict
from .metrics import LABELS, METRICS, summarise

TRAINING_COLUMNS = ("method", "steps", "seconds", "peak_memory_bytes", "learning_rate")
IMAGE_COLUMNS = ("variant", "inference_steps", "prompt", "seed", *METRICS, "file")


def _number(value: float) -> float | None:
    """JSON has no NaN; an absent score is null."""
    return None if value is None or not math.isfinite(value) else value


# ---- grids -----------------------------------------------------------------------------------------

def comparison_grid(result: CompareResult, path: Path | None = None):
    """Rows: variants (at each inference-step count); columns: prompts; first seed."""
    pictures = [picture for entry in result.entries for picture in entry.preview]
    return image_grid(pictures, rows=len(result.entries), cols=len(result.prompts),
                      row_labels=[entry.label for entry in result.entries], col_labels=result.prompts, path=path)


def xy_grid(result: CompareResult, path: Path | None = None):
    """The first prompt's first-seed image over the first swept axis (columns) and the second (rows)."""
    axes = swept_axes(result.entries)
    if not axes:
        return None
    x_axis, y_axis = axes[0], (axes[1] if len(axes) > 1 else None)
    placed = [e for e in result.entries if x_axis in e.coordinates and (y_axis is None or y_axis in e.coordinates)]
    xs = sorted({e.coordinates[x_axis] for e in placed})
    ys = sorted({e.coordinates[y_axis] for e in placed}) if y_axis else [None]
    blank = Image.new("RGB", placed[0].preview[0].size, "white")
    cells = []
    for y in ys:
        for x in xs:
            match = next((e for e in placed if e.coordinates[x_axis] == x
                          and (y_axis is None or e.coordinates[y_axis] == y)), None)
            cells.append(match.preview[0] if match else blank)
    return image_grid(cells, rows=len(ys), cols=len(xs), col_labels=[f"{AXIS_LABELS[x_axis]} {x:g}" for x in xs],
                      row_labels=[f"{AXIS_LABELS[y_axis]} {y:g}" for y in ys] if y_axis else None, path=path)


# ---- charts ----------------------------------------------------------------------------------------

def _series_name(entry: Entry, axes: Iterable[str]) -> str:
    return ", ".join(f"{AXIS_LABELS[a]} {entry.coordinates[a]:g}" for a in axes if a in entry.coordinates) or "all"


def tuning_series(entries: list[Entry], axis: str, metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """Mean ``metric`` against ``axis``, one line per combination of the other swept axes."""
    others = [a for a in swept_axes(entries) if a != axis]
    series: dict[str, list[tuple[float, float]]] = {}
    for entry in entries:
        if axis in entry.coordinates and entry.summary(metric).count:
            series.setdefault(_series_name(entry, others), []).append((entry.coordinates[axis],
                                                                        entry.summary(metric).mean))
    return {name: ([x for x, _ in sorted(points)], [y for _, y in sorted(points)]) for name, points in series.items()}


def draw_plots(result: CompareResult, folder: Path) -> dict[str, Path]:
    """A bar chart per score and for generation time, and a tuning chart per score and swept axis."""
    plots = {}
    for metric in result.metrics:
        path = folder / f"{metric}.png"
        bar_plot({e.label: e.summary(metric).mean for e in result.entries}, path,
                 title=f"{LABELS[metric]} (mean over {result.entries[0].summary(metric).count} images)",
                 ylabel=LABELS[metric])
        plots[metric] = path
    plots["time"] = folder / "seconds_per_image.png"
    bar_plot({e.label: e.seconds_per_image for e in result.entries}, plots["time"],
             title="Generation time per image (warm)", ylabel="seconds")
    for axis in swept_axes(result.entries):
        for metric in result.metrics:
            path = folder / f"{metric}_vs_{axis}.png"
            line_plot(tuning_series(result.entries, axis, metric), path, title=f"{LABELS[metric]} vs "
                      f"{AXIS_LABELS[axis]}", xlabel=AXIS_LABELS[axis], ylabel=LABELS[metric])
            plots[f"{metric}_vs_{axis}"] = path
    return plots


# ---- tables ----------------------------------------------------------------------------------------

def entry_record(entry: Entry, metrics: Iterable[str]) -> dict[str, Any]:
    """One variant's row: what it is, its scores (mean, std, n), speed, size and training figures."""
    variant = entry.variant
    return {
        "variant": entry.label,
        "checkpoint": str(variant.checkpoint),
        "lora": str(variant.lora) if variant.lora else "",
        "lora_strength": variant.strength if variant.lora else None,
        "inference_steps": entry.inference_steps,
        "coordinates": entry.coordinates,
        "scores": {m: {"mean": _number(entry.summary(m).mean), "std": _number(entry.summary(m).std),
                       "count": entry.summary(m).count} for m in metrics},
        "seconds_per_image": entry.seconds_per_image,
        "file_bytes": entry.file_bytes,
        "training": entry.training,
    }


def _csv(rows: list[dict[str, Any]], columns: Iterable[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def image_rows(result: CompareResult) -> list[dict[str, Any]]:
    rows = []
    for entry in result.entries:
        for index, (prompt, seed, file) in enumerate(zip(entry.prompts, entry.seeds, entry.image_files)):
            scores = {m: entry.scores[m][index] for m in result.metrics}
            rows.append({"variant": entry.label, "inference_steps": entry.inference_steps, "prompt": prompt,
                         "seed": seed, **scores, "file": str(file)})
    return rows


def summary_rows(result: CompareResult) -> list[dict[str, Any]]:
    rows = []
    for entry in result.entries:
        record = entry_record(entry, result.metrics)
        row = {k: v for k, v in record.items() if k not in ("coordinates", "scores", "training")}
        for metric, values in record["scores"].items():
            row[f"{metric}_mean"], row[f"{metric}_std"] = values["mean"], values["std"]
        row.update({f"training_{k}": entry.training.get(k, "") for k in TRAINING_COLUMNS})
        rows.append(row)
    return rows


def summary_columns(result: CompareResult) -> list[str]:
    return (["variant", "checkpoint", "lora", "lora_strength", "inference_steps"]
            + [f"{m}_{part}" for m in result.metrics for part in ("mean", "std")]
            + ["seconds_per_image", "file_bytes"] + [f"training_{k}" for k in TRAINING_COLUMNS])


# ---- HTML ------------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _embedded(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _training_cell(training: dict[str, Any]) -> str:
    parts = []
    if "steps" in training:
        parts.append(f"{training['steps']:.0f} steps")
    if "seconds" in training:
        parts.append(f"{training['seconds']:.0f} s")
    if "peak_memory_bytes" in training:
        parts.append(f"peak {format_size(training['peak_memory_bytes'])}")
    if "method" in training:
        parts.append(str(training["method"]))
    return _e(", ".join(parts) or "-")


def render_html(result: CompareResult) -> str:
    """The report page; every piece of text that did not come from this module is escaped."""
    metrics = result.metrics
    head = "".join(f"<th>{_e(LABELS[m])}</th>" for m in metrics)
    rows = []
    for entry in result.entries:
        cells = "".join(f"<td>{_e(entry.summary(m).text())}</td>" for m in metrics)
        rows.append(f"<tr><td>{_e(entry.label)}</td>{cells}<td>{entry.seconds_per_image:.3f}</td>"
                    f"<td>{_e(format_size(entry.file_bytes))}</td><td>{_training_cell(entry.training)}</td>"
                    f"<td>{_e(entry.variant.weights_file.name)}</td></tr>")
    images = "".join(f"<figure>{_embedded(path, name)}<figcaption>{_e(name)}</figcaption></figure>"
                     for name, path in [("comparison grid", result.files["grid"])]
                     + ([("sweep grid", result.files["xy_grid"])] if "xy_grid" in result.files else [])
                     + [(name, path) for name, path in result.plots.items()])
    prompts = "".join(f"<li>{_e(p)}</li>" for p in result.prompts)
    judges = ", ".join(f"{_e(kind)}: {_e(source)}" for kind, source in result.judges.items())
    s = result.config.sampling
    settings = (f"seeds {_e(result.config.seeds)}; {_e(s.scheduler)}, inference steps {_e(s.steps)}, guidance "
                f"{s.guidance_scale:g}; negative prompt &ldquo;{_e(s.negative_prompt)}&rdquo;; CLIP-T ignores "
                f"{_e(', '.join(result.config.identifier_words()) or 'nothing')}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Booth comparison</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left}}img{{max-width:100%}}figure{{margin:1em 0}}</style>
</head><body>
<h1>Booth comparison</h1>
<p>{settings}. Judges: {judges}.</p>
<p>CLIP-T: 100 &times; max(cos(image, prompt), 0) in CLIP space. CLIP-I and DINO: mean cosine similarity to the
instance images. Values are mean &plusmn; standard deviation over every prompt and seed; time is per image,
after a warm-up image, the same way for every variant.</p>
<table><tr><th>variant</th>{head}<th>s / image</th><th>file size</th><th>training</th><th>file</th></tr>
{''.join(rows)}</table>
{images}
<h2>Prompts</h2><ol>{prompts}</ol>
</body></html>
"""


def write_outputs(result: CompareResult) -> CompareResult:
    """Grids, charts, scores.csv, summary.csv, results.json and report.html into the output folder."""
    out = result.output_dir
    result.files["grid"] = out / "grid.png"
    result.grid = comparison_grid(result, result.files["grid"])
    result.xy_grid = xy_grid(result, out / "xy_grid.png")
    if result.xy_grid is not None:
        result.files["xy_grid"] = out / "xy_grid.png"
    result.plots = draw_plots(result, out / "plots")
    result.files["scores_csv"] = atomic_write_text(out / "scores.csv", _csv(image_rows(result),
                                                                           [c for c in IMAGE_COLUMNS if c not in
                                                                            set(METRICS) - set(result.metrics)]))
    result.files["summary_csv"] = atomic_write_text(out / "summary.csv", _csv(summary_rows(result),
                                                                             summary_columns(result)))
    document = {"config": config_to_dict(result.config), "prompts": result.prompts, "judges": result.judges,
                "metrics": list(result.metrics), "variants": [entry_record(e, result.metrics) for e in result.entries],
                "images": image_rows(result), "plots": {k: str(v) for k, v in result.plots.items()}}
    result.files["json"] = atomic_write_text(out / "results.json", json.dumps(document, indent=1, allow_nan=False))
    result.files["report"] = atomic_write_text(out / "report.html", render_html(result))
    return result


# ---- a batch's scores as a table (the CLIPScore node) ----------------------------------------------

def score_table(scores: dict[str, list[float]], prompts: list[str]) -> tuple[list[str], list[list[str]]]:
    """Column names and rows: one row per image (its prompt and scores), then the mean ± std row."""
    metrics = [m for m in METRICS if m in scores]
    columns = ["#", "prompt", *(LABELS[m] for m in metrics)]
    count = len(scores["clip_t"])
    rows = [[str(i), prompts[i if len(prompts) > 1 else 0], *(f"{scores[m][i]:.4f}" for m in metrics)]
            for i in range(count)]
    rows.append(["all", "mean ± std", *(summarise(scores[m]).text(4) for m in metrics)])
    return columns, rows


def text_table(columns: list[str], rows: list[list[str]]) -> str:
    """Tab-separated, one line per row: pastes into a spreadsheet as columns."""
    return "\n".join("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in line)
                     for line in [columns, *rows])


def table_image(columns: list[str], rows: list[list[str]], title: str = "") -> np.ndarray:
    """The table drawn as an RGB image (for ComfyUI's image preview)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [[cell if len(cell) <= 48 else cell[:47] + "…" for cell in row] for row in rows]
    figure = Figure(figsize=(8.0, 0.6 + 0.3 * (len(rows) + 1)), dpi=100)
    axes = figure.add_subplot()
    axes.axis("off")
    if title:
        axes.set_title(title.replace("$", r"\$"))
    table = axes.table(cellText=[[c.replace("$", r"\$") for c in row] for row in shown],
                       colLabels=[c.replace("$", r"\$") for c in columns], loc="center", cellLoc="left")
    table.auto_set_column_width(list(range(len(columns))))
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
