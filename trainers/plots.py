"""Loss curves, charts and labelled image grids, as RGB arrays/PIL images and atomically written PNGs.

Charts draw on a bare ``matplotlib.figure.Figure`` with the Agg canvas and never touch pyplot, so
plotting from a training thread inside ComfyUI changes no global backend or figure state, and
matplotlib is imported only when a chart is actually drawn.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import BoothError
from .files import atomic_write
from .sampling import to_pil

_FIGURE_SIZE = (8.0, 4.5)  # inches at 100 dpi -> 800x450 pixels
_DPI = 100
_MAX_LABEL_LINES = 3


def _save_png(image: Image.Image, path: str | os.PathLike | None) -> None:
    if path is not None:
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _plain(text: object) -> str:
    """User text shown literally: a '$' in a prompt must not start matplotlib's math mode."""
    return str(text).replace("$", r"\$")


def _new_figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=_FIGURE_SIZE, dpi=_DPI, layout="tight")
    axes = figure.add_subplot()
    axes.set_title(_plain(title))
    axes.set_xlabel(_plain(xlabel))
    axes.set_ylabel(_plain(ylabel))
    axes.grid(True, alpha=0.3)
    return figure, axes


def _render(figure, path: str | os.PathLike | None) -> np.ndarray:
    """Draw ``figure`` off-screen; return it as RGB uint8 HxWx3 and write the PNG if ``path`` is given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    with warnings.catch_warnings():  # text in scripts the default font lacks draws as boxes; no need to warn
        warnings.filterwarnings("ignore", message="Glyph .* missing")
        canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    _save_png(Image.fromarray(pixels), path)
    return pixels


def _note(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", color="0.4")


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` finite values at each step (NaN until one is seen)."""
    data = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(data)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, data, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    ends = np.arange(1, len(data) + 1)
    starts = np.maximum(ends - window, 0)
    count = counts[ends] - counts[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[ends] - sums[starts]) / count, np.nan)


def loss_plot(losses: Sequence[float] | dict[str, Sequence[float]], path: str | os.PathLike | None = None, *,
              title: str = "Training loss", smoothing: int = 0) -> np.ndarray:
    """Per-step loss (thin) with its moving average (bold) against step number, one colour per series.

    ``smoothing`` is the averaging window in steps; 0 picks about a twentieth of the run, 1 draws
    no average. Non-finite losses (a diverged step) leave gaps and are counted in the legend; an
    empty history draws an empty chart saying so, so callers can plot from the first step on.
    """
    if smoothing < 0:
        raise BoothError(f"Loss plot smoothing is {smoothing}; use 0 (automatic) or a window of 1 or more steps.")
    series = dict(losses) if isinstance(losses, dict) else {"loss": losses}
    figure, axes = _new_figure(title, "step", "loss")
    drawn = False
    for index, (name, values) in enumerate(series.items()):
        data = np.asarray(list(values), dtype=np.float64).reshape(-1)
        bad = int((~np.isfinite(data)).sum())
        if len(data) == bad:
            continue
        steps = np.arange(1, len(data) + 1)
        colour = f"C{index}"
        label = _plain(name) + (f" ({bad} non-finite omitted)" if bad else "")
        window = smoothing or max(1, len(data) // 20)
        axes.plot(steps, data, color=colour, linewidth=0.8, alpha=0.35 if window > 1 else 1.0, label=label,
                  marker="." if len(data) <= 100 else None)  # short or gappy runs stay visible
        if window > 1:
            axes.plot(steps, moving_average(data, window), color=colour, linewidth=2.0,
                      label=f"{_plain(name)}, mean of {window} steps")
        drawn = True
    if drawn:
        axes.legend(loc="upper right")
    else:
        _note(axes, "no finite loss values yet")
    return _render(figure, path)


def bar_plot(values: dict[str, float], path: str | os.PathLike | None = None, *, title: str = "",
             ylabel: str = "") -> np.ndarray:
    """One labelled bar per named value (e.g. a score per model), the value printed on each bar."""
    figure, axes = _new_figure(title, "", ylabel)
    if not values:
        _note(axes, "no values")
        return _render(figure, path)
    names = [_plain(name if len(name) <= 40 else name[:39] + "…") for name in map(str, values)]
    heights = [float(v) if math.isfinite(float(v)) else 0.0 for v in values.values()]
    bars = axes.bar(range(len(names)), heights, color=[f"C{i}" for i in range(len(names))])
    crowded = len(names) > 4
    axes.set_xticks(range(len(names)), names, rotation=20 if crowded else 0, ha="right" if crowded else "center")
    axes.bar_label(bars, labels=[f"{float(v):.4g}" for v in values.values()])
    return _render(figure, path)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike | None = None, *,
              title: str = "", xlabel: str = "", ylabel: str = "") -> np.ndarray:
    """``{name: (xs, ys)}`` as one marked line per series (e.g. a metric against training step)."""
    figure, axes = _new_figure(title, xlabel, ylabel)
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise BoothError(f"Line plot series {name!r} has {len(xs)} x values but {len(ys)} y values.")
        axes.plot(list(xs), list(ys), marker="o", markersize=3, label=_plain(name))
    if any(len(xs) for xs, _ in series.values()):
        axes.legend(loc="best")
    else:
        _note(axes, "no values")
    return _render(figure, path)


def _font(size: int):
    """DejaVu Sans as bundled with matplotlib (clear spacing, wide unicode coverage); Pillow's default otherwise."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if candidate.is_file():
            return ImageFont.truetype(str(candidate), size)
    return ImageFont.load_default(size=size)


def _drawable(text: str, font) -> str:
    """Text the font can draw: one line, and Latin-1 only when only the bitmap fallback font exists."""
    text = " ".join(str(text).split())
    if not isinstance(font, ImageFont.FreeTypeFont):
        text = text.encode("latin-1", "replace").decode("latin-1")
    return text


def _longest_prefix(text: str, font, width: int) -> int:
    """Characters of ``text`` that fit in ``width`` pixels (at least one, so wrapping always advances)."""
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle]) <= width:
            low = middle
        else:
            high = middle - 1
    return low


def fit_text(text: str, font, width: int, max_lines: int = _MAX_LABEL_LINES) -> list[str]:
    """Word-wrap ``text`` to ``width`` pixels in at most ``max_lines`` lines, ending in '…' if cut.

    Words longer than a line are broken by character, so any string (URLs, CJK without spaces) fits.
    """
    remaining = _drawable(text, font)
    lines: list[str] = []
    while remaining and len(lines) < max_lines:
        cut = _longest_prefix(remaining, font, width)
        if cut < len(remaining):
            space = remaining.rfind(" ", 0, cut + 1)
            cut = space if space > 0 else cut
        lines.append(remaining[:cut].rstrip())
        remaining = remaining[cut:].lstrip()
    if remaining and lines:
        last = lines[-1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def _line_height(font) -> int:
    top, bottom = font.getbbox("Ag")[1::2]
    return int(bottom - top) + max(2, int(bottom - top) // 3)


def _draw_label(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, font) -> None:
    """Centre the wrapped ``text`` inside ``box`` (left, top, right, bottom)."""
    left, top, right, bottom = box
    padding = 4
    step = _line_height(font)
    lines = fit_text(text, font, max(1, right - left - 2 * padding), max(1, (bottom - top) // step))
    y = top + max(0, (bottom - top - step * len(lines)) // 2)
    for line in lines:
        x = left + max(0, (right - left - int(font.getlength(line))) // 2)
        draw.text((x, y), line, font=font, fill=(20, 20, 20))
        y += step


def image_grid(images: torch.Tensor | list[Image.Image], rows: int, cols: int, *,
               row_labels: list[str] | None = None, col_labels: list[str] | None = None,
               path: str | os.PathLike | None = None) -> Image.Image:
    """Images row by row into a ``rows`` x ``cols`` grid, with optional labels above and to the left.

    Cells take the largest image's size (smaller ones are centred, not resampled) and empty cells stay
    white, so the result is exactly ``cols * cell_w (+ label column)`` by ``rows * cell_h (+ label row)``.
    """
    if rows < 1 or cols < 1:
        raise BoothError(f"An image grid needs at least one row and column, not {rows}x{cols}.")
    pictures = to_pil(images)
    if len(pictures) > rows * cols:
        raise BoothError(f"{len(pictures)} images do not fit a {rows}x{cols} grid; use more rows or columns.")
    for labels, count, kind in ((row_labels, rows, "row"), (col_labels, cols, "column")):
        if labels is not None and len(labels) != count:
            raise BoothError(f"{kind} labels: {len(labels)} given for {count} {kind}s; give one label per {kind}.")
    cell_w = max((p.width for p in pictures), default=64)
    cell_h = max((p.height for p in pictures), default=64)
    font = _font(max(10, min(cell_w, cell_h) // 20))
    label_w = max(48, cell_w // 2) if row_labels else 0
    label_h = _line_height(font) * _MAX_LABEL_LINES + 8 if col_labels else 0
    grid = Image.new("RGB", (label_w + cols * cell_w, label_h + rows * cell_h), "white")
    for index, picture in enumerate(pictures):
        row, col = divmod(index, cols)
        grid.paste(picture, (label_w + col * cell_w + (cell_w - picture.width) // 2,
                             label_h + row * cell_h + (cell_h - picture.height) // 2))
    draw = ImageDraw.Draw(grid)
    for col, text in enumerate(col_labels or []):
        _draw_label(draw, (label_w + col * cell_w, 0, label_w + (col + 1) * cell_w, label_h), text, font)
    for row, text in enumerate(row_labels or []):
        _draw_label(draw, (0, label_h + row * cell_h, label_w, label_h + (row + 1) * cell_h), text, font)
    _save_png(grid, path)
    return grid
