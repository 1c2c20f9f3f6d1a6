"""Reliability and safety, checked against a corpus of bad inputs that the tests generate as real files.

Every unusable input must give one message that names the file or setting and says what to do;
odd but valid images must train as a viewer shows them; runs stopped by SIGTERM continue bit for
bit; a run killed with SIGKILL leaves only complete files; running out of memory gives advice and
frees what the failed step held; pickles never run code.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time
import weakref
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.checkpoint.loader import load_components
from trainers.cli import main
from trainers.config import TrainConfig, apply_overrides
from trainers.data import InstanceDataset, read_image_size, scan_image_folder
from trainers.errors import BoothError
from trainers.files import load_tensors
from trainers.lora import LoraSettings, add_lora, apply_lora, read_lora, save_lora
from trainers.train import train
from trainers.train.faults import OUT_OF_MEMORY
from trainers.train.state import load_state

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a photo of sks star"
# What ComfyUI's model folders list (folder_paths.supported_pt_extensions): a file with one of these
# endings in models/ is offered to users, so no temporary or partial file may carry one.
COMFY_MODEL_SUFFIXES = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


pytestmark = pytest.mark.usefixtures("one_thread", "keep_signal_handlers")



def solid(size: tuple[int, int], colour, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def noise_image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` (8-bit RGB) but holds one row of pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * width)))
            + chunk(b"IEND", b""))


# ---- images: each unusable file beside one good image; the message names it and says what to do ----

def _truncated(fmt: str) -> bytes:
    data = encoded(noise_image((96, 96)), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return data[: int(len(data) * 0.6)]


BAD_IMAGES = {
    "truncated png": ("cut off.png", lambda: _truncated("PNG"), ["truncated or corrupt", "Re-export or remove it"]),
    "truncated jpeg": ("cut off.jpg", lambda: _truncated("JPEG"), ["truncated or corrupt", "Re-export or remove it"]),
    "text named .png": ("notes.png", lambda: b"these are my notes, not a picture\n",
                        ["is not an image Pillow can read, despite its '.png' extension",
                         "Remove it or re-export it as PNG or JPEG"]),
    "empty .jpg": ("empty.jpg", lambda: b"", ["is not an image Pillow can read", "Remove it or re-export it"]),
    "1x1 pixel": ("dot.png", lambda: encoded(solid((1, 1), (9, 9, 9)), "PNG"),
                  ["is only 1x1 pixels", "Remove or replace it"]),
    "decompression bomb": ("huge.png", lambda: png_claiming(20000, 10000),
                           ["is too large", "Downscale it first"]),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_unusable_image_gets_one_message_naming_it(case, tmp_path):
    name, make, pieces = BAD_IMAGES[case]
    folder = tmp_path / "images"
    folder.mkdir()
    solid((64, 64), (0, 200, 0)).save(folder / "good.png")
    (folder / name).write_bytes(make())
    with pytest.raises(BoothError) as error:
        dataset = InstanceDataset(scan_image_folder(folder, instance_prompt=PROMPT).items, resolution=64)
        for index in range(len(dataset)):  # header problems fail the scan, damaged pixel data the decode
            dataset[index]
    message = str(error.value)
    assert name in message and "good.png" not in message
    for piece in pieces:
        assert piece in message, message


def test_empty_folder_says_what_to_add(tmp_path):
    folder = tmp_path / "empty folder"
    folder.mkdir()
    with pytest.raises(BoothError) as error:
        scan_image_folder(folder, instance_prompt=PROMPT)
    message = str(error.value)
    assert f"No images in {folder}" in message and "(found: nothing)" in message
    assert "Add .bmp, .jpeg, .jpg, .png" in message and "'10_sks dog'" in message


# ---- images: odd but valid files train as a viewer shows them --------------------------------------

def _cmyk_jpeg(path: Path) -> None:
    solid((64, 64), (0, 255, 255, 0), "CMYK").save(path, "JPEG", quality=95)  # no cyan, full magenta+yellow: red


def _sixteen_bit_png(path: Path) -> None:
    Image.fromarray(np.full((64, 64), 32896, dtype=np.uint16)).save(path)  # 32896 / 65535 * 255 = 128


def _palette_with_transparency(path: Path) -> None:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (32, 0, 64, 64))  # right half red, left half palette entry 0, which is transparent
    image.save(path, transparency=0)


def _rgba(path: Path) -> None:
    image = solid((64, 64), (0, 0, 0, 0), "RGBA")  # transparent black on the left
    image.paste((0, 0, 255, 255), (32, 0, 64, 64))
    image.save(path)


def _exif_rotated_jpeg(path: Path) -> None:
    """Stored 128 wide x 64 high, left half red; orientation 6 shows it turned 90 degrees clockwise:
    64 wide x 128 high, red on top."""
    image = solid((128, 64), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 64, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, "JPEG", quality=95, exif=exif)


VALID_IMAGES = {  # file name, writer, expected (R, G, B) of the left and right halves after a 64 px centre crop
    "CMYK jpeg": ("scan.jpg", _cmyk_jpeg, (255, 0, 0), (255, 0, 0)),
    "16-bit png": ("export16.png", _sixteen_bit_png, (128, 128, 128), (128, 128, 128)),
    "palette png with transparency": ("icon.png", _palette_with_transparency, (255, 255, 255), (255, 0, 0)),
    "RGBA png": ("cutout.png", _rgba, (255, 255, 255), (0, 0, 255)),
    "unicode and spaces": ("ünï cödé 写真 🙂.png", lambda p: solid((64, 64), (0, 200, 0)).save(p),
                           (0, 200, 0), (0, 200, 0)),
}


@pytest.mark.parametrize("case", sorted(VALID_IMAGES))
def test_odd_but_valid_image_trains_as_seen(case, tmp_path):
    name, write, left, right = VALID_IMAGES[case]
    folder = tmp_path / "naïve фото 写真"
    folder.mkdir()
    write(folder / name)
    items = scan_image_folder(folder, instance_prompt=PROMPT).items
    assert [item.source.name for item in items] == [name]
    pixels = InstanceDataset(items, resolution=64)[0]["pixels"]
    assert pixels.shape == (3, 64, 64)
    rgb = (pixels + 1) * 127.5
    assert torch.allclose(rgb[:, :, 4:28].mean((1, 2)), torch.tensor(left, dtype=torch.float32), atol=12)
    assert torch.allclose(rgb[:, :, 36:60].mean((1, 2)), torch.tensor(right, dtype=torch.float32), atol=12)


def test_exif_rotated_photo_is_used_upright(tmp_path):
    path = tmp_path / "phone photo.jpg"
    _exif_rotated_jpeg(path)
    assert read_image_size(path) == (64, 128)
    items = scan_image_folder(tmp_path, instance_prompt=PROMPT).items
    rgb = (InstanceDataset(items, resolution=64)[0]["pixels"] + 1) * 127.5  # centre crop: rows 32-96 of 128
    assert torch.allclose(rgb[:, 2:28].mean((1, 2)), torch.tensor([255.0, 0, 0]), atol=12)  # red on top
    assert torch.allclose(rgb[:, 36:62].mean((1, 2)), torch.tensor([0, 0, 255.0]), atol=12)  # blue below


def test_captions_in_any_common_encoding(tmp_path):
    text = "a café photo of sks star"
    for name, data in {"bom": text.encode("utf-8-sig"), "utf16": text.encode("utf-16"),
                       "latin1": text.encode("latin-1")}.items():
        solid((64, 64), (0, 200, 0)).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_bytes(data)
    items = scan_image_folder(tmp_path, instance_prompt=PROMPT).items
    assert {item.source.stem: item.caption for item in items} == {"bom": text, "latin1": text, "utf16": text}


_DECODE_PEAK = """
import resource, sys
from trainers.data import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = load_image(sys.argv[1], min_short_side=512)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(image.size[0], image.size[1], (after - before) * 1024)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory read from Linux ru_maxrss (KiB)")
def test_10000_pixel_photo_is_decoded_shrunk_within_bounded_memory(tmp_path):
    """A 100-megapixel JPEG is decoded straight at 1/8 scale: its full-size pixels (100 MB even in
    grayscale) are never in memory. (Other formats decode in full; above Pillow's ~179 MP bomb
    limit they are refused from the header, see the 'decompression bomb' case.)"""
    path = tmp_path / "big photo.jpg"
    Image.linear_gradient("L").resize((10000, 10000), Image.Resampling.NEAREST).save(path, quality=80)
    out = subprocess.run([sys.executable, "-c", _DECODE_PEAK, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    width, height, grown = map(int, out)
    assert (width, height) == (625, 625)  # 1/8 while decoding, then halved: the short side stays >= 512
    assert grown < 40 * 2**20, f"decoding grew the process by {grown / 2**20:.0f} MiB"


# ---- checkpoints: what people pick by mistake, through the command line -----------------------------

class _RunsCode:
    def __reduce__(self):
        return exec, ("open('PWNED', 'w').write('code from a checkpoint ran')",)


def _half_of(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def _tensor_file(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def _raw_safetensors(header: dict | bytes, header_len: int | None = None, data: bytes = b"") -> bytes:
    import json

    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if header_len is None else header_len) + text + data


def _torch_saved(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _vae_only(sd15: Path) -> bytes:
    state, _ = load_tensors(sd15)
    return _tensor_file({k.removeprefix("first_stage_model."): v for k, v in state.items()
                         if k.startswith("first_stage_model.")})


BAD_CHECKPOINTS = {
    "truncated safetensors": ("half download.safetensors", lambda sd15: _half_of(sd15),
                              ["is truncated or corrupt", "Re-download or re-export it"]),
    "text file": ("readme.safetensors", lambda sd15: b"# my model\nsee the website\n",
                  ["is not a valid safetensors file", "re-download or re-export it"]),
    "header length bomb": ("bomb.safetensors", lambda sd15: _raw_safetensors(b"{}", header_len=2**62),
                           [f"its header claims {2**62} bytes", "re-download or re-export it"]),
    "offset bomb": ("offsets.safetensors",
                    lambda sd15: _raw_safetensors({"w": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}},
                                                  data=bytes(16)),
                    ["truncated or corrupt: tensor 'w' lies outside the file's data (16 bytes)",
                     "Re-download or re-export it"]),
    "LoRA as base": ("my lora.safetensors",
                     lambda sd15: _tensor_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight":
                                                torch.zeros(4, 32)}),
                     ["is a LoRA, not a checkpoint", "load LoRAs with a LoRA loader"]),
    "VAE as base": ("vae-ft-mse.safetensors", _vae_only, ["is a VAE on its own", "Choose a full model file"]),
    "SD3 keys": ("sd3 medium.safetensors",
                 lambda sd15: _tensor_file({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight":
                                            torch.zeros(8, 4)}),
                 ["is a Stable Diffusion 3 model, which Booth does not train", "Supported: SD 1.x, SD 2.x, SDXL base"]),
    "checkpoint that runs code": ("old model.ckpt", lambda sd15: _torch_saved({"state_dict": {"x": _RunsCode()}}),
                                  ["could not be loaded safely", "(it asks for exec)",
                                   "use a .safetensors version of the model"]),
    "plain pickle that runs code": ("model.pt", lambda sd15: pickle.dumps({"x": _RunsCode()}),
                                    ["could not be loaded safely: it holds pickled objects other than tensors",
                                     "use a .safetensors version of the model"]),
    "truncated ckpt": ("cut.ckpt", lambda sd15: _torch_saved({"state_dict": {"w": torch.ones(4096)}})[:3000],
                       ["is truncated or corrupt", "Re-download or re-export it"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_unusable_checkpoint_is_one_line_naming_it(case, tmp_path, tiny_checkpoint, capsys, monkeypatch):
    name, make, pieces = BAD_CHECKPOINTS[case]
    monkeypatch.chdir(tmp_path)  # where a pickle's code would write PWNED
    base = tmp_path / name
    base.write_bytes(make(tiny_checkpoint("sd15")))
    solid((64, 64), (0, 200, 0)).save(tmp_path / "subject.png")
    code = main(["train", "--method", "lora", "--base", str(base), "--images", str(tmp_path),
                 "--instance-prompt", PROMPT, "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert name in err
    for piece in pieces:
        assert piece in err, err
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.safetensors"))


def test_lora_for_another_family_names_file_and_both_families(tmp_path, tiny_checkpoint):
    settings = LoraSettings(rank=4)
    sdxl = load_components(tiny_checkpoint("sdxl"))
    add_lora(sdxl, settings)
    path = save_lora(sdxl, settings, tmp_path / "xl style.safetensors")
    with pytest.raises(BoothError) as error:
        apply_lora(load_components(tiny_checkpoint("sd15")), read_lora(path))
    message = str(error.value)
    assert "xl style.safetensors does not fit this model: it is a LoRA for Stable Diffusion XL base" in message
    assert "Choose a LoRA trained for Stable Diffusion 1.x" in message


# ---- impossible settings --------------------------------------------------------------------------

def valid_config(*overrides: str) -> TrainConfig:
    config = TrainConfig(method="dreambooth_lora", base="model.safetensors", images="images", instance_prompt=PROMPT)
    return apply_overrides(config, ["prior.class_prompt=a photo of a star", *overrides])


@pytest.mark.parametrize("override, line", [
    ("steps=0", "- steps: is 0; it must be at least 1."),
    ("batch_size=0", "- batch_size: is 0; it must be at least 1."),
    ("data.resolution=500", "- data.resolution: is 500; use a multiple of 8 from 64 to 4096"),
    ("data.resolution=0", "- data.resolution: is 0; use a multiple of 8 from 64 to 4096"),
    ("learning_rate=-1e-4", "- learning_rate: is -0.0001; it must be a finite number, 0 or more."),
    ("learning_rate=.inf", "- learning_rate: is inf; it must be a finite number, 0 or more."),
    ("learning_rate=.nan", "- learning_rate: is nan; it must be a finite number, 0 or more."),
    ("lora.rank=0", "- lora: LoRA rank must be a whole number of at least 1"),
    ("lora.alpha=0", "- lora: LoRA alpha must be a number above 0"),
    ("gradient_accumulation=0", "- gradient_accumulation: is 0; it must be at least 1."),
    ("data.repeats=0", "- data.repeats: is 0; it must be at least 1."),
    ("batch_size=8", "- prior.num_class_images: is 4 but each step takes batch_size=8 class images; use at least 8."),
])
def test_impossible_setting_is_named_with_its_fix(override, line):
    with pytest.raises(BoothError) as error:
        valid_config("prior.num_class_images=4", override).validate()
    lines = [text.strip() for text in str(error.value).splitlines()]
    assert lines[0] == "Invalid training settings:" and any(text.startswith(line) for text in lines), lines


def train_config(tmp_path: Path, base: Path, *overrides: str) -> TrainConfig:
    config = TrainConfig(method="lora", base=str(base), images=str(tmp_path / "images"), instance_prompt=PROMPT,
                         output_dir=str(tmp_path / "run"), steps=2, batch_size=2, learning_rate=1e-3,
                         mixed_precision="no", save_dtype="fp32")
    return apply_overrides(config, ["data.resolution=64", "lora.rank=4", *overrides])


@pytest.fixture
def two_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        noise_image((64, 64), seed=index).save(folder / f"{index}.png")
    return folder


def test_batch_larger_than_the_images_is_refused(tmp_path, two_images, tiny_checkpoint):
    with pytest.raises(BoothError) as error:
        train(train_config(tmp_path, tiny_checkpoint("sd15"), "batch_size=4"))
    assert str(error.value) == (f"batch_size is 4, but {two_images} gives only 2 sample(s) per epoch (2 image(s), "
                                "repeats included). Lower batch_size to 2 or less, or raise data.repeats "
                                "(or add images).")
    assert train(train_config(tmp_path, tiny_checkpoint("sd15"), "batch_size=4", "data.repeats=2",
                              "steps=1")).steps == 1


def test_rank_larger_than_a_layer_names_the_layer_and_the_limit(tmp_path, two_images, tiny_checkpoint):
    with pytest.raises(BoothError) as error:
        train(train_config(tmp_path, tiny_checkpoint("sd15"), "lora.rank=4096"))
    message = str(error.value)
    assert re.search(r"LoRA rank 4096 is larger than the smallest targeted layer can use \(\S+: \(\d+, \d+\) "
                     r"allows at most (\d+)\)\. Lower rank to \1 or less\.", message), message
    assert not Path(train_config(tmp_path, tiny_checkpoint("sd15")).resolved().output).exists()


# ---- out of memory --------------------------------------------------------------------------------

def test_out_of_memory_gives_advice_and_frees_the_failed_step(tmp_path, two_images, tiny_checkpoint):
    """A real forward hook on the UNet raises the error CUDA would; nothing in Booth is replaced."""
    components = load_components(tiny_checkpoint("sd15"))
    held = []

    def run_out(module, inputs, output):
        held.append(weakref.ref(output.sample if hasattr(output, "sample") else output[0]))
        raise OUT_OF_MEMORY("CUDA out of memory. Tried to allocate 20.00 GiB")

    components.unet.register_forward_hook(run_out)
    config = train_config(tmp_path, tiny_checkpoint("sd15"), "save_every=1")
    with pytest.raises(BoothError) as error:
        train(config, components=components)
    message = str(error.value)
    assert message.startswith("Out of memory on cpu (CUDA out of memory. Tried to allocate 20.00 GiB). To fit: ")
    assert "set gradient_checkpointing=true; lower batch_size (now 2;" in message
    assert "The memory this run held has been released" in message
    gc.collect()
    assert held and held[0]() is None  # the failed step's activations died although the error is still held
    assert error.value.__context__ is None or error.value.__context__.__traceback__ is None
    assert not Path(config.resolved().output).exists()


# ---- interrupt and resume through the real command line ---------------------------------------------

def cli_args(base: Path, images: Path, out: Path, cache: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--method", "lora", "--base", str(base), "--images", str(images), "--instance-prompt", PROMPT,
            "--steps", str(steps), "--resolution", "64", "--rank", "4", "--learning-rate", "1e-2", "--seed", "3",
            "--output-dir", str(out), "--log-every", "1", "--set", "batch_size=2", "--set", "mixed_precision=no",
            "--set", "save_dtype=fp32", "--set", "lora.dropout=0.1", "--set", "lr_scheduler=cosine",
            "--set", f"cache_dir={cache}", *extra]


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "trainers", *cli_args(*args)]


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def start_and_wait_for_steps(command: list[str], steps: int) -> tuple[subprocess.Popen, list[str]]:
    """Start a CLI run and return once it has printed ``steps`` progress lines."""
    process = subprocess.Popen(command, cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if sum(l.startswith("step ") for l in lines) >= steps:
            return process, lines
    pytest.fail("the run ended before printing enough steps:\n" + "".join(lines))


def test_sigterm_then_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, two_images, tiny_checkpoint, capsys):
    """The interrupted run is a real CLI process (one intra-op thread, as here) stopped by SIGTERM;
    ``--resume`` continues it through the same command line in this process, and the uninterrupted
    run it is compared with trains here from the very settings the CLI builds."""
    from trainers.cli import _train_config, build_parser

    base, cache, steps = tiny_checkpoint("sd15"), tmp_path / "cache", 12
    uninterrupted = _train_config(build_parser().parse_args(cli_args(base, two_images, tmp_path / "whole", cache,
                                                                     steps)))
    assert train(uninterrupted).steps == steps
    at = 3
    process, lines = start_and_wait_for_steps(cli_command(base, two_images, tmp_path / "parts", cache, steps), at)
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=60)
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    stopped_at = int(re.search(r"stopping at step (\d+) as requested", output).group(1))
    assert at <= stopped_at <= at + 1, output  # the step running when the signal came was the last
    assert "resume with the same command plus --resume" in output
    assert load_state(tmp_path / "parts" / "state.pt")["step"] == stopped_at
    assert main(cli_args(base, two_images, tmp_path / "parts", cache, steps, "--resume")) == 0
    resumed = capsys.readouterr().out
    assert f"resumed from {tmp_path / 'parts' / 'state.pt'} at step {stopped_at}" in resumed
    assert f"({steps - stopped_at} in this run)" in resumed
    done, _ = load_tensors(tmp_path / "whole" / "lora.safetensors")
    again, _ = load_tensors(tmp_path / "parts" / "lora.safetensors")
    assert done.keys() == again.keys() and all(torch.equal(done[k], again[k]) for k in done)


def _files_left(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def kill_when_a_write_starts(process: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    """SIGKILL ``process`` as soon as an atomic write's temporary file (``.<name>.*.tmp``) appears in ``folder``."""
    deadline = time.monotonic() + timeout
    while not any(folder.rglob(".*.tmp")):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no write started in {folder} (exit code {process.poll()})")
        time.sleep(0.001)
    process.kill()
    process.communicate(timeout=60)


def test_sigkill_while_saving_leaves_only_complete_files(tmp_path, two_images, tiny_checkpoint):
    """save_every=1 writes the state and a LoRA snapshot every step; the run is killed once step 2's
    saving has begun, with a temporary file on disk."""
    out = tmp_path / "run"
    process, _ = start_and_wait_for_steps(cli_command(tiny_checkpoint("sd15"), two_images, out, tmp_path / "cache",
                                                      500, "--set", "save_every=1"), 2)
    kill_when_a_write_starts(process, out)
    models = [p for p in _files_left(out) if p.suffix in COMFY_MODEL_SUFFIXES]
    assert models, "the run saved nothing before it was killed"
    for path in models:  # every file a model list would show is complete and readable
        if path.suffix == ".safetensors":
            assert load_tensors(path)[0]
        else:
            assert load_state(path)["step"] >= 1
    for path in _files_left(out):  # a kill can leave a temporary behind, but never one a model list shows
        if path not in models:
            assert path.name.startswith(".") and path.suffix not in COMFY_MODEL_SUFFIXES, path


_WRITER = """
import sys, torch
from safetensors.torch import save
from trainers.files import atomic_write, save_tensors
tensors = {"w": torch.arange(8 * 2**20, dtype=torch.float32)}
save_tensors(tensors, sys.argv[1])
data = save({"w": tensors["w"] + 1})

def half_then_wait(tmp):
    with open(tmp, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        print("mid-write", flush=True)
        sys.stdin.readline()  # killed while waiting here
        handle.write(data[len(data) // 2 :])

atomic_write(sys.argv[1], half_then_wait)
"""


def test_sigkill_mid_write_leaves_the_previous_complete_file(tmp_path):
    """A child writes a 32 MB file, starts replacing it through the same atomic write that save_tensors
    uses, and is killed with half of the new file written."""
    target = tmp_path / "model.safetensors"
    process = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], cwd=ROOT, env=cli_env(),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "mid-write"
    [partial] = tmp_path.glob(".model.safetensors.*.tmp")
    assert 0 < partial.stat().st_size < target.stat().st_size
    process.kill()
    process.communicate(timeout=30)
    tensors, _ = load_tensors(target)
    assert torch.equal(tensors["w"], torch.arange(8 * 2**20, dtype=torch.float32))
    for path in tmp_path.iterdir():
        assert path == target or (path.name.startswith(".") and path.suffix not in COMFY_MODEL_SUFFIXES), path


# ---- names of outputs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def comfy_bridge():
    """The node package imported the way ComfyUI imports it (ComfyUI itself is not needed for this)."""
    name = "booth_pack_reliability"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.nodes.comfy_bridge")


@pytest.mark.parametrize("typed, expected", [
    ("../../../.bashrc", "bashrc.safetensors"),
    ("/etc/cron.d/job", "job.safetensors"),
    ("..\\..\\Windows\\evil", "_.._Windows_evil.safetensors"),
    ("my subject v2.safetensors", "my subject v2.safetensors"),
    ("naïve 写真", "naïve 写真.safetensors"),
])
def test_output_names_stay_in_their_folder(typed, expected, tmp_path, comfy_bridge):
    path = comfy_bridge.safe_output_path(tmp_path, typed, ".safetensors", False, "lora_name")
    assert path == tmp_path / expected and path.parent == tmp_path


def test_existing_model_is_not_replaced_unless_asked(tmp_path, comfy_bridge):
    (tmp_path / "mine.safetensors").write_bytes(b"keep")
    with pytest.raises(comfy_bridge.BoothError,
                       match=r"lora_name: mine.safetensors already exists in .*turn on overwrite"):
        comfy_bridge.safe_output_path(tmp_path, "mine", ".safetensors", False, "lora_name")
    assert comfy_bridge.safe_output_path(tmp_path, "mine", ".safetensors", True, "lora_name").name == "mine.safetensors"
    with pytest.raises(comfy_bridge.BoothError, match="lora_name is empty"):
        comfy_bridge.safe_output_path(tmp_path, " .. ", ".safetensors", False, "lora_name")
