"""Training images: a real corpus of awkward files written with Pillow, read back through trainers.data."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.data import (InstanceDataset, aspect_buckets, bucket_batches, load_image, nearest_bucket, preview_batch,
                           read_image_size, scan_image_folder, validate_image_batch, validate_resolution)
from trainers.errors import BoothError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def pixel(image: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.asarray(image, dtype=np.int32)[xy[1], xy[0]]


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims a size, with no pixel data: tests limits without allocating anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


# ---- decoding single files ---------------------------------------------------------------------------------------

def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (64, 32), BLUE)
    stored.paste(Image.new("RGB", (16, 16), RED), (0, 0))  # marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(stored, tmp_path / "phone.jpg", exif=exif, quality=95)

    assert read_image_size(path) == (32, 64)
    image = load_image(path)
    assert image.size == (32, 64)
    assert pixel(image, (28, 4))[0] > 200 and pixel(image, (28, 4))[2] < 60  # now top-right
    assert pixel(image, (4, 4))[2] > 200  # top-left is background blue
    small = load_image(path, min_short_side=8)  # shrunk while decoding, then rotated
    assert small.size == (8, 16) and pixel(small, (6, 1))[0] > pixel(small, (1, 1))[0] + 100


def test_rgba_is_composited_onto_background(tmp_path):
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (16, 32), (255, 0, 0, 255)), (0, 0))
    rgba.paste(Image.new("RGBA", (8, 32), (0, 0, 255, 128)), (24, 0))
    path = save(rgba, tmp_path / "cutout.png")

    assert tuple(pixel(load_image(path), (20, 5))) == WHITE
    on_green = load_image(path, background=(0, 200, 0))
    assert tuple(pixel(on_green, (20, 5))) == (0, 200, 0)
    assert tuple(pixel(on_green, (5, 5))) == RED
    half = pixel(on_green, (28, 5))  # 50% blue over green
    assert abs(half[1] - 100) <= 2 and abs(half[2] - 128) <= 2


def test_palette_with_transparency(tmp_path):
    palette_image = Image.new("P", (16, 16), 0)
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette_image.paste(1, (8, 0, 16, 16))  # right half: palette entry 1 (red); left: entry 0 (transparent)
    path = save(palette_image, tmp_path / "palette.png", transparency=0)

    image = load_image(path, background=(10, 20, 30))
    assert image.mode == "RGB"
    assert tuple(pixel(image, (2, 2))) == (10, 20, 30)
    assert tuple(pixel(image, (12, 2))) == RED


def test_grayscale_cmyk_and_16_bit(tmp_path):
    gray = save(Image.new("L", (16, 16), 77), tmp_path / "gray.png")
    assert tuple(pixel(load_image(gray), (3, 3))) == (77, 77, 77)

    cmyk = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "print.jpg", quality=95)
    red = pixel(load_image(cmyk), (8, 8))
    assert red[0] > 240 and red[1] < 15 and red[2] < 15

    values = np.full((16, 16), 128 * 257, dtype=np.uint16)  # 16-bit mid grey
    values[0, 0], values[0, 1] = 65535, 0
    deep = save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(deep).mode == "I;16"
    image = load_image(deep)
    assert tuple(pixel(image, (5, 5))) == (128, 128, 128)  # scaled by 257, not clipped to 255
    assert tuple(pixel(image, (0, 0))) == WHITE and tuple(pixel(image, (1, 0))) == (0, 0, 0)

    floats = np.full((16, 16), 0.5, dtype=np.float32)
    assert tuple(pixel(load_image(save(Image.fromarray(floats), tmp_path / "float.tif")), (4, 4))) == (128, 128, 128)


def test_large_jpeg_is_shrunk_while_decoding(tmp_path):
    path = save(Image.new("RGB", (6000, 4000), (40, 90, 160)), tmp_path / "huge.jpg")
    image = load_image(path, min_short_side=64)
    assert 64 <= min(image.size) < 128 and image.size[0] > image.size[1]
    assert np.allclose(pixel(image, (10, 10)), (40, 90, 160), atol=3)
    assert read_image_size(path) == (6000, 4000)
    sample = InstanceDataset(scan_image_folder(tmp_path, instance_prompt="sks").items, resolution=64)[0]
    assert sample["pixels"].shape == (3, 64, 64)


@pytest.mark.parametrize("name, write, expected", [
    ("tiny.png", lambda p: Image.new("RGB", (1, 1)).save(p), "only 1x1 pixels"),
    ("notes.png", lambda p: p.write_text("this is not a picture"), "not an image Pillow can read"),
    ("empty.jpg", lambda p: p.write_bytes(b""), "not an image Pillow can read"),
    ("bomb.png", lambda p: png_header_only(p, 20000, 10000), "too large"),
])
def test_unusable_files_raise_booth_error_naming_them(tmp_path, name, write, expected):
    path = tmp_path / name
    write(path)
    for read in (read_image_size, load_image):
        with pytest.raises(BoothError, match=expected) as caught:
            read(path)
        assert str(path) in str(caught.value)


def test_truncated_jpeg_fails_on_decode(tmp_path):
    whole = save(noise(128, 128), tmp_path / "whole.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    assert read_image_size(path) == (128, 128)  # the header survives
    with pytest.raises(BoothError, match="truncated or corrupt") as caught:
        load_image(path)
    assert "cut.jpg" in str(caught.value)


# ---- folders and captions ----------------------------------------------------------------------------------------

def test_kohya_folders_captions_and_skipped_files(tmp_path, caplog):
    root = tmp_path / "subject"
    save(noise(48, 48, 1), root / "3_sks dog" / "a.png")
    save(noise(48, 48, 2), root / "3_sks dog" / "b.jpg")
    save(noise(48, 48, 3), root / "3_sks dog" / "c.webp")
    (root / "3_sks dog" / "c.txt").write_bytes("  sks dog on a café \r\n terrace ".encode("latin-1"))
    save(noise(48, 48, 4), root / "top.PNG")
    (root / "top.txt").write_text("\ufeffsks dog, close-up", encoding="utf-8")
    save(noise(48, 48, 5), root / "plain.bmp")
    (root / "meta.json").write_text("{}")
    (root / "orphan.txt").write_text("nobody")
    save(noise(48, 48, 6), root / "backup" / "old.png")

    with caplog.at_level(logging.WARNING, logger="trainers.data.dataset"):
        scan = scan_image_folder(root, instance_prompt=" photo of sks dog ", repeats=2)

    captions = {item.source.name: (item.caption, item.repeats) for item in scan.items}
    assert captions == {
        "a.png": ("sks dog", 3), "b.jpg": ("sks dog", 3), "c.webp": ("sks dog on a café terrace", 3),
        "plain.bmp": ("photo of sks dog", 2), "top.PNG": ("sks dog, close-up", 2),
    }
    assert scan.epoch_length == 3 * 3 + 2 * 2
    assert all(item.size == (48, 48) for item in scan.items)
    skipped = {entry.path.name: entry.reason for entry in scan.skipped}
    assert set(skipped) == {"meta.json", "orphan.txt", "backup"}
    assert "not an image" in skipped["meta.json"] and "N_caption" in skipped["backup"]
    assert "meta.json" in caplog.text and "backup" in caplog.text

    dataset = InstanceDataset(scan.items, resolution=32)
    assert len(dataset) == 13
    assert [dataset[i]["index"] for i in range(len(dataset))].count(0) == 3


def test_unicode_paths_and_captions(tmp_path):
    folder = tmp_path / "bilder mit ümlauten"
    image_path = save(noise(40, 30), folder / "猫 1.png")
    (folder / "猫 1.txt").write_text("ein Kätzchen 猫", encoding="utf-8")
    scan = scan_image_folder(folder)
    assert [(item.source, item.caption) for item in scan.items] == [(image_path, "ein Kätzchen 猫")]
    sample = InstanceDataset(scan.items, resolution=16)[0]
    assert sample["pixels"].shape == (3, 16, 16) and sample["caption"] == "ein Kätzchen 猫"


def test_undecodable_caption_bytes_do_not_crash(tmp_path):
    save(noise(16, 16), tmp_path / "x.png")
    (tmp_path / "x.txt").write_bytes(b"sks \x81\x8d toy")  # invalid UTF-8 and undefined in cp1252
    assert scan_image_folder(tmp_path).items[0].caption == "sks \x81\x8d toy"
    (tmp_path / "x.txt").write_text("sks toy", encoding="utf-16")
    assert scan_image_folder(tmp_path).items[0].caption == "sks toy"


def test_missing_caption_names_the_image(tmp_path):
    save(noise(16, 16), tmp_path / "lonely.png")
    (tmp_path / "lonely.txt").write_text("   \n")
    with pytest.raises(BoothError, match="instance prompt") as caught:
        scan_image_folder(tmp_path)
    assert "lonely.png" in str(caught.value)


def test_all_bad_images_reported_at_once(tmp_path):
    save(noise(16, 16), tmp_path / "good.png")
    (tmp_path / "fake.png").write_text("hello")
    save(Image.new("RGB", (1, 1)), tmp_path / "dot.png")
    with pytest.raises(BoothError, match="2 unusable") as caught:
        scan_image_folder(tmp_path, instance_prompt="sks")
    assert "fake.png" in str(caught.value) and "dot.png" in str(caught.value)


def test_folder_errors(tmp_path):
    with pytest.raises(BoothError, match="not found") as caught:
        scan_image_folder(tmp_path / "nowhere")
    assert "nowhere" in str(caught.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(BoothError, match="No images") as caught:
        scan_image_folder(empty, instance_prompt="sks")
    assert str(empty) in str(caught.value) and "readme.md (not an image (.md))" in str(caught.value)


# ---- pixels, buckets, determinism ----------------------------------------------------------------------------------

def test_pixels_shape_range_and_values(tmp_path):
    half = Image.new("RGB", (64, 32), (0, 0, 0))
    half.paste(Image.new("RGB", (32, 32), WHITE), (32, 0))
    save(half, tmp_path / "bw.png")
    scan = scan_image_folder(tmp_path, instance_prompt="sks")
    pixels = InstanceDataset(scan.items, resolution=32)[0]["pixels"]
    assert pixels.dtype == torch.float32 and pixels.shape == (3, 32, 32)
    assert pixels.min() == -1.0 and pixels.max() == 1.0
    assert torch.all(pixels[:, :, :12] == -1.0) and torch.all(pixels[:, :, 20:] == 1.0)  # centre crop of the middle


def test_buckets_keep_aspect_ratio():
    buckets = aspect_buckets(256)
    assert buckets == ((192, 320), (256, 256), (320, 192))
    assert nearest_bucket((300, 200), aspect_buckets(512)) == (640, 384)
    assert nearest_bucket((200, 300), aspect_buckets(512)) == (384, 640)
    assert nearest_bucket((1000, 1010), aspect_buckets(512)) == (512, 512)
    large = aspect_buckets(1024)
    for width, height in large:
        assert width % 64 == 0 and height % 64 == 0 and width * height <= 1024 * 1024
        assert (height, width) in large  # portrait and landscape treated alike

    batch = torch.rand(1, 60, 90, 3)
    dataset = InstanceDataset.from_image_batch(batch, "sks", resolution=256, buckets=True)
    assert dataset[0]["pixels"].shape == (3, 192, 320)  # CHW of a 320x192 bucket


def test_bucket_batches_group_sizes(tmp_path):
    for i, size in enumerate([(90, 60), (60, 90), (90, 60), (64, 64), (90, 60)]):
        save(noise(*size, seed=i), tmp_path / f"{i}.png")
    scan = scan_image_folder(tmp_path, instance_prompt="sks")
    dataset = InstanceDataset(scan.items, resolution=256, buckets=True)
    batches = bucket_batches(dataset, 2, seed=3)
    assert sorted(i for batch in batches for i in batch) == list(range(5))
    for batch in batches:
        assert len({dataset.sample_size(i) for i in batch}) == 1
    assert sorted(len(batch) for batch in batches) == [1, 1, 1, 2]
    assert bucket_batches(dataset, 2, seed=3) == batches


def test_random_crop_and_flip_are_seeded(tmp_path):
    save(noise(96, 64, 7), tmp_path / "a.png")
    save(noise(64, 96, 8), tmp_path / "b.png")
    items = scan_image_folder(tmp_path, instance_prompt="sks", repeats=3).items

    def render(seed: int, epoch: int, order: list[int]) -> dict[int, torch.Tensor]:
        dataset = InstanceDataset(items, resolution=32, crop="random", flip=True, seed=seed)
        dataset.set_epoch(epoch)
        return {i: dataset[i]["pixels"] for i in order}

    first = render(0, 0, list(range(6)))
    again = render(0, 0, list(reversed(range(6))))
    assert all(torch.equal(first[i], again[i]) for i in range(6))
    assert not all(torch.equal(first[i], first[i + 1]) for i in (0, 1))  # repeats differ from each other
    assert not all(torch.equal(first[i], render(1, 0, [i])[i]) for i in range(6))
    assert not all(torch.equal(first[i], render(0, 1, [i])[i]) for i in range(6))

    centred = InstanceDataset(items, resolution=32)
    assert torch.equal(centred[0]["pixels"], centred[1]["pixels"])


def test_in_memory_batch_and_preview():
    batch = torch.zeros(3, 40, 40, 3)
    batch[1] = 1.0
    batch[2, :, :, 0] = 1.0
    dataset = InstanceDataset.from_image_batch(batch, " sks toy ", repeats=2, resolution=24)
    assert len(dataset) == 6
    sample = dataset[4]
    assert sample["caption"] == "sks toy" and sample["index"] == 2
    assert torch.allclose(sample["pixels"][0], torch.ones(24, 24)) and torch.all(sample["pixels"][1:] == -1.0)

    preview = preview_batch(dataset, max_images=2)
    assert preview.shape == (2, 24, 24, 3) and preview.dtype == torch.float32
    assert preview[0].max() == 0.0 and preview[1].min() == 1.0

    grey = InstanceDataset.from_image_batch(torch.full((32, 32, 1), 0.5), "sks", resolution=16)
    assert torch.allclose(grey[0]["pixels"], torch.full((3, 16, 16), 128 / 127.5 - 1), atol=1e-6)


def test_preview_of_mixed_sizes_is_one_size(tmp_path):
    save(noise(90, 60), tmp_path / "wide.png")
    save(noise(40, 100), tmp_path / "tall.jpg")
    dataset = InstanceDataset(scan_image_folder(tmp_path, instance_prompt="sks").items, resolution=32, buckets=True)
    preview = preview_batch(dataset, max_images=8)
    assert preview.shape == (2, 32, 32, 3) and 0.0 <= preview.min() and preview.max() <= 1.0


def test_validation_messages():
    assert validate_resolution(512) == 512
    for bad in (0, -8, 500, 512.0, True, "512"):
        with pytest.raises(BoothError, match="resolution"):
            validate_resolution(bad)
    with pytest.raises(BoothError, match="data.resolution"):
        validate_resolution(100, "data.resolution")
    with pytest.raises(BoothError, match="shape"):
        validate_image_batch(torch.rand(2, 16, 16))
    with pytest.raises(BoothError, match="float"):
        validate_image_batch(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(BoothError, match="instance prompt"):
        InstanceDataset.from_image_batch(torch.rand(1, 16, 16, 3), "  ", resolution=16)
    with pytest.raises(BoothError, match="crop"):
        InstanceDataset.from_image_batch(torch.rand(1, 16, 16, 3), "sks", resolution=16, crop="top")
