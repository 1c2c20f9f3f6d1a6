"""A few kilobytes of input never make Booth allocate gigabytes: image shapes, repeats and the
resolution are bounded where they are read, before anything is allocated, and a CPU allocation
failure gets the same advice as a CUDA one. Real files, the real command line and a real failed
allocation."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainers.checkpoint.loader import load_components
from trainers.cli import main
from trainers.config import TrainConfig, apply_overrides
from trainers.data import InstanceDataset, scan_image_folder
from trainers.errors import BoothError
from trainers.train import train

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a photo of sks star"

pytestmark = pytest.mark.usefixtures("one_thread")


def strip_png(width: int, height: int) -> bytes:
    """A real, complete, tiny PNG of ``width`` x ``height`` black pixels (it compresses to a few KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(3 * width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


@pytest.fixture
def images(noise_images) -> Path:
    return noise_images


def test_a_strip_image_is_refused_from_its_header(images):
    data = strip_png(100_000, 8)
    assert len(data) < 3000
    (images / "strip.png").write_bytes(data)
    with pytest.raises(BoothError) as error:
        scan_image_folder(images, instance_prompt=PROMPT)
    message = str(error.value)
    assert "strip.png is 100000x8 pixels, a strip more than 16 times longer than it is wide" in message
    assert "Crop it to the subject or remove it" in message


_CROP_PEAK = """
import resource, sys
from PIL import Image
from trainers.data import InstanceDataset, scan_image_folder
items = scan_image_folder(sys.argv[1], instance_prompt="x").items
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pixels = InstanceDataset(items, resolution=2048)[0]["pixels"]
print(tuple(pixels.shape), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory read from Linux ru_maxrss (KiB)")
def test_a_wide_image_is_cropped_without_scaling_all_of_it(tmp_path):
    """A 16:1 panorama (the widest allowed), 8000x500, at 2048 px: scaling all of it to cover the
    square held 32768x2048 RGB pixels (192 MiB, more while resampling: 334 MiB measured); now only
    the cropped region is resampled (the 2048x2048 float tensor itself is 48 MiB)."""
    folder = tmp_path / "wide"
    folder.mkdir()
    (folder / "panorama.png").write_bytes(strip_png(8000, 500))
    out = subprocess.run([sys.executable, "-c", _CROP_PEAK, str(folder)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split(" ", 3)
    assert "".join(out[:3]) == "(3,2048,2048)"
    assert int(out[3]) < 150 * 2**20, f"cropping grew the process by {int(out[3]) / 2**20:.0f} MiB"


def test_a_huge_repeat_count_in_a_folder_name_is_refused(images):
    kohya = images / "1000000000_sks star"
    kohya.mkdir()
    (images / "0.png").rename(kohya / "0.png")
    with pytest.raises(BoothError, match=r"Folder .*1000000000_sks star asks for 1000000000 repeats; use at most "
                                         r"10,000 \(rename it, e.g. '10_sks star'\)"):
        scan_image_folder(images, instance_prompt=PROMPT)


def test_an_epoch_too_long_to_index_is_refused(images):
    big = images / "10000_big"
    big.mkdir()
    for index in range(101):  # 101 images x 10,000 repeats: just over the 1,000,000 samples allowed
        Image.new("RGB", (8, 8)).save(big / f"{index}.png")
    with pytest.raises(BoothError, match=r"gives 1,010,002 samples per epoch \(103 image\(s\), repeats included\); "
                                         r"Booth allows 1,000,000"):
        scan_image_folder(images, instance_prompt=PROMPT)


def test_dataset_repeats_are_counted_not_listed():
    dataset = InstanceDataset.from_image_batch(torch.rand(2, 16, 16, 3), PROMPT, repeats=10_000, resolution=64)
    assert len(dataset) == 20_000
    assert dataset[9_999]["index"] == 0 and dataset[10_000]["index"] == 1 and dataset[19_999]["index"] == 1


@pytest.mark.parametrize("flags, line", [
    (["--set", "data.repeats=1000000000"], "- data.repeats: is 1000000000; use at most 10,000."),
    (["--resolution", "100000"], "- data.resolution: is 100000; use a multiple of 8 from 64 to 4096"),
    (["--resolution", "8192"], "- data.resolution: is 8192; use a multiple of 8 from 64 to 4096"),
])
def test_settings_that_would_exhaust_memory_are_refused(flags, line, tmp_path, images, capsys):
    code = main(["train", "--method", "lora", "--base", str(tmp_path / "model.safetensors"), "--images", str(images),
                 "--instance-prompt", PROMPT, "--output-dir", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and line in err and "Traceback" not in err, err


def test_cpu_out_of_memory_gets_the_same_advice(tmp_path, images, tiny_checkpoint):
    """A forward hook asks the real CPU allocator for a petabyte, as an over-large step would."""
    components = load_components(tiny_checkpoint("sd15"))
    components.unet.register_forward_hook(lambda *_: torch.empty(2**50, dtype=torch.uint8))
    config = apply_overrides(TrainConfig(method="lora", base=str(tiny_checkpoint("sd15")), images=str(images),
                                         instance_prompt=PROMPT, output_dir=str(tmp_path / "run"), steps=1,
                                         mixed_precision="no", device="cpu"),
                             ["data.resolution=64", "lora.rank=4"])
    with pytest.raises(BoothError) as error:
        train(config, components=components)
    message = str(error.value)
    assert message.startswith("Out of memory on cpu (") and "can't allocate memory" in message
    assert "To fit: set gradient_checkpointing=true" in message and "has been released" in message
