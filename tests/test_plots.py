"""Charts and image grids: real PNG files, exact layouts, awkward input (NaN, empty, long/unicode text)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFont

from trainers.errors import BoothError
from trainers.plots import bar_plot, fit_text, image_grid, line_plot, loss_plot, moving_average

ROOT = Path(__file__).resolve().parents[1]
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's first two cycle colours


def count_colour(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    return int((np.abs(pixels.astype(int) - colour).max(axis=-1) <= tolerance).sum())


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_loss_plot_writes_the_returned_picture(tmp_path):
    losses = [0.2 + 0.05 * math.sin(i / 5) for i in range(300)]
    target = tmp_path / "run" / "loss.png"
    pixels = loss_plot(losses, target, smoothing=10)
    assert pixels.shape == (450, 800, 3) and pixels.dtype == np.uint8
    assert np.array_equal(read_png(target), pixels)
    assert [p.name for p in target.parent.iterdir()] == ["loss.png"]  # no temporary file left behind
    assert count_colour(pixels, BLUE) > 200


def test_loss_plot_draws_one_colour_per_series():
    pixels = loss_plot({"instance": [0.3, 0.2, 0.25, 0.1], "prior": [0.5, 0.4, 0.45, 0.42]})
    assert count_colour(pixels, BLUE) > 50 and count_colour(pixels, ORANGE) > 50


@pytest.mark.parametrize("losses", [[], [float("nan")] * 5, {"instance": [], "prior": [float("inf")]}])
def test_loss_plot_without_finite_values_draws_an_empty_chart(losses, tmp_path):
    pixels = loss_plot(losses, tmp_path / "loss.png")
    assert pixels.shape == (450, 800, 3) and count_colour(pixels, BLUE) == 0
    assert np.array_equal(read_png(tmp_path / "loss.png"), pixels)


def test_loss_plot_skips_non_finite_steps():
    with_gaps = loss_plot([0.3, float("nan"), 0.2, float("inf"), 0.25, 0.1])
    assert count_colour(with_gaps, BLUE) > 20


def test_moving_average_ignores_non_finite_values():
    averaged = moving_average([1.0, float("nan"), 3.0, 5.0, 7.0], 2)
    assert averaged.tolist() == [1.0, 1.0, 3.0, 4.0, 6.0]
    assert np.isnan(moving_average([float("nan"), 2.0], 3)[0])


def test_loss_plot_refuses_negative_smoothing():
    with pytest.raises(BoothError, match="smoothing"):
        loss_plot([0.1, 0.2], smoothing=-1)


def test_charts_keep_dollar_signs_and_unicode_literal(tmp_path):
    pixels = loss_plot({"x $^$ y": [0.1, 0.2]}, title="size $^$ 猫 🐶 ü")  # would be broken math text
    assert pixels.shape == (450, 800, 3)
    bars = bar_plot({"base $^$": 0.21, "tuned 猫": 0.28, "x" * 80: float("nan")}, tmp_path / "bar.png", title="CLIP")
    assert np.array_equal(read_png(tmp_path / "bar.png"), bars)
    assert count_colour(bars, BLUE) > 500 and count_colour(bars, ORANGE) > 500


def test_line_plot_draws_each_series_and_checks_lengths(tmp_path):
    pixels = line_plot({"a": ([0, 100, 200], [0.2, 0.25, 0.3]), "b": ([0, 200], [0.3, 0.1])}, tmp_path / "l.png",
                       xlabel="step", ylabel="score")
    assert np.array_equal(read_png(tmp_path / "l.png"), pixels)
    assert count_colour(pixels, BLUE) > 100 and count_colour(pixels, ORANGE) > 100
    with pytest.raises(BoothError, match="'a' has 2 x values but 1 y values"):
        line_plot({"a": ([0, 1], [0.5])})


def test_plotting_leaves_pyplot_alone():
    code = ("import sys; from trainers.plots import loss_plot; loss_plot([0.1, 0.2]); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_grid_without_labels_is_exactly_the_cells(tmp_path):
    images = torch.rand(5, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    grid = image_grid(images, 2, 3, path=tmp_path / "grid.png")
    assert grid.size == (3 * 64, 2 * 48) and grid.mode == "RGB"
    pixels = np.asarray(grid)
    expected = (images.numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(pixels[48:96, 64:128], expected[4])  # row 1, column 1
    assert (pixels[48:96, 128:] == 255).all()  # the sixth cell is empty
    assert np.array_equal(read_png(tmp_path / "grid.png"), pixels)


def test_labels_add_a_margin_and_leave_cells_intact():
    images = torch.rand(4, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    plain = image_grid(images, 2, 2)
    labelled = image_grid(images, 2, 2, row_labels=["base", "tuned"], col_labels=["seed 1", "seed 2"])
    extra_w, extra_h = labelled.width - plain.width, labelled.height - plain.height
    assert extra_w > 0 and extra_h > 0
    assert np.array_equal(np.asarray(labelled)[extra_h:, extra_w:], np.asarray(plain))
    margin = np.asarray(labelled)[:extra_h, extra_w:]
    assert (margin < 128).any()  # the column labels were drawn
    only_columns = image_grid(images, 2, 2, col_labels=["a", "b"])
    assert only_columns.width == plain.width and only_columns.height == labelled.height


def test_long_and_unicode_labels_do_not_break_the_grid():
    images = [Image.new("RGB", (64, 64), "gray"), Image.new("RGB", (32, 40), "black")]
    awkward = ["a photo of sks dog on the beach at sunset, highly detailed, " * 5, "猫🐶 ü ß \n\t ñ " + "x" * 200]
    grid = image_grid(images, 2, 1, row_labels=awkward, col_labels=["🐶" * 100])
    plain = image_grid(images, 2, 1)
    assert plain.size == (64, 128)
    cell = np.asarray(grid)[grid.height - 64:, grid.width - 64:]
    assert (cell[12:52, 16:48] == 0).all() and (cell[:12] == 255).all()  # the small image is centred


def test_grid_refuses_impossible_layouts():
    images = torch.rand(3, 8, 8, 3)
    with pytest.raises(BoothError, match="3 images do not fit a 1x2 grid"):
        image_grid(images, 1, 2)
    with pytest.raises(BoothError, match="row labels: 1 given for 2 rows"):
        image_grid(images, 2, 2, row_labels=["only one"])
    with pytest.raises(BoothError, match="at least one row"):
        image_grid(images, 0, 3)


def test_fit_text_wraps_within_width_and_marks_cuts():
    font = ImageFont.load_default(size=12)
    lines = fit_text("one two three four five six seven eight nine ten " * 3, font, 80, max_lines=2)
    assert len(lines) == 2 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 80 for line in lines)
    assert fit_text("short", font, 80) == ["short"]
    assert fit_text("", font, 80) == []
    unbroken = fit_text("x" * 300, font, 50, max_lines=10)
    assert len(unbroken) == 10 and all(font.getlength(line) <= 50 for line in unbroken)


def test_fit_text_with_the_bitmap_fallback_font_replaces_what_it_cannot_draw():
    bitmap = ImageFont.load_default_imagefont()
    assert fit_text("猫 café", bitmap, 200) == ["? café"]
