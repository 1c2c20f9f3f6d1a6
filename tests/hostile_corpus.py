"""A corpus of hostile and broken inputs, generated as real files, each with the command line that
meets it and what Booth must answer: exit status 2 and one ``error:`` line naming the file or
setting and the fix, never a stack trace.

``python tests/hostile_corpus.py`` builds it in a temporary folder and prints the count per class
(the figures in docs/reliability.md); tests/test_hostile_corpus.py runs every case.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

PROMPT = "a photo of sks star"
CLASSES = {
    "data loss": "a run that would destroy or replace a file",
    "memory": "an input that would make Booth allocate gigabytes",
    "traceback": "an input a user can fix that used to end in a stack trace",
    "message": "a misleading message",
    "non-finite": "NaN or infinite weights in or out",
    "smaller": "captions, damaged images found late, a LoRA for another model",
}


@dataclass
class Case:
    name: str
    kind: str  # a key of CLASSES
    argv: list[str]
    expect: list[str]  # pieces of the one error line
    code: int = 2
    posix_bytes: bool = False  # needs non-UTF-8 file names (POSIX file systems)
    permissions: bool = False  # needs file modes that bind: run where root's overrides are dropped
    untouched: list[Path] = field(default_factory=list)  # files whose bytes must not change


def _header_file(path: Path, header: dict, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _images(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = np.random.default_rng(index).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    return folder


def _changed(source: Path, target: Path, change) -> Path:
    """A copy of ``source`` (metadata kept) with ``change`` applied to its tensors."""
    tensors = load_file(str(source))
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
    change(tensors)
    save_file(tensors, str(target), metadata=metadata)  # safetensors itself: no Booth guard in the way
    return target


def _first(tensors: dict[str, torch.Tensor], ending: str, prefix: str = "") -> str:
    return next(k for k in sorted(tensors) if k.endswith(ending) and k.startswith(prefix))


def build(root: Path, base: Path, lora: Path, sd2: Path) -> list[Case]:
    """Write the corpus's files under ``root`` and return its cases. ``base``: a tiny SD1.5
    checkpoint; ``lora``: a LoRA for it (random, non-zero factors); ``sd2``: a tiny SD2 checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    images = _images(root / "images")
    run = ["--instance-prompt", PROMPT, "--steps", "1", "--resolution", "64", "--rank", "4", "--set",
           "mixed_precision=no"]

    def train(*extra: str, images_dir: Path = images, base_file: Path = base) -> list[str]:
        return ["train", "--method", "lora", "--base", str(base_file), "--images", str(images_dir),
                "--output-dir", str(root / "run"), *run, *extra]

    samples = _images(root / "samples")
    a_file = root / "a file"
    a_file.write_text("not a folder")
    (root / "images.safetensors").mkdir()
    cases = [
        # data loss
        Case("--out is the base", "data loss", train("--out", str(base), "--overwrite"),
             ["is one of the inputs (the base checkpoint"], untouched=[base]),
        Case("--out exists", "data loss", train("--out", str(lora)), ["already exists", "--overwrite"],
             untouched=[lora]),
        Case("--out is a folder", "data loss", train("--out", str(root / "images.safetensors")),
             ["is a folder; give a file name"]),
        Case("--output-dir is the images", "data loss", train("--output-dir", str(images)),
             ["is read as part of the instance images folder"]),
        Case("previews written into the images", "data loss",
             train("--output-dir", str(images.parent), "--set", "sample.every=1", images_dir=samples),
             ["output_dir/samples (previews)", "is read as part of the instance images folder"]),
        Case("--output-dir through a file", "traceback", train("--output-dir", str(a_file / "run")),
             [f"{a_file} is a file. Choose a folder path."]),
        Case("cache_dir through a file", "traceback", train("--set", f"cache_dir={a_file / 'c'}"),
             [f"{a_file} is a file. Choose a folder path."]),
        Case("class images through a file", "traceback",
             train("--class-prompt", "a star", "--class-images", str(a_file / "c")),
             [f"{a_file} is a file. Choose a folder path."]),
        Case("merge --out through a file", "traceback",
             ["merge", "--lora", str(lora), "--out", str(a_file / "x.safetensors")],
             [f"{a_file} is a file. Choose a folder path."]),
        Case("--out name over 255 bytes", "traceback", train("--out", str(root / ("n" * 250 + ".safetensors"))),
             ["output: the name nnnn", "is 262 bytes long; at most 241 fit"]),
        # memory
        Case("--resolution 100000", "memory", train("--resolution", "100000"),
             ["data.resolution: is 100000; use a multiple of 8 from 64 to 4096"]),
        Case("--resolution 8192", "memory", train("--resolution", "8192"), ["data.resolution: is 8192"]),
        Case("data.repeats=1000000000", "memory", train("--set", "data.repeats=1000000000"),
             ["data.repeats: is 1000000000; use at most 10,000."]),
    ]

    strip = _images(root / "strip images", 1)
    Image.new("RGB", (100_000, 8)).save(strip / "strip.png")
    kohya = _images(root / "kohya images" / "1000000000_sks star", 1).parent
    cases += [
        Case("100000x8 PNG", "memory", train(images_dir=strip), ["strip.png is 100000x8 pixels, a strip"]),
        Case("kohya folder 1000000000_x", "memory", train(images_dir=kohya),
             ["asks for 1000000000 repeats; use at most 10,000"]),
    ]

    # tracebacks: broken files and settings
    int32 = _changed(base, root / "int32 weight.safetensors",
                     lambda t: t.update({(k := _first(t, "weight", "model.diffusion_model.")): t[k].to(torch.int32)}))
    latin = root / "latin1.yaml"
    latin.write_bytes("instance_prompt: café\n".encode("latin-1"))
    binary = root / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    section = root / "section.yaml"
    section.write_text("lora: [8]\n")
    unreadable = {name: root / name for name in ("unreadable.safetensors", "unreadable lora.safetensors",
                                                 "unreadable.yaml")}
    unreadable["unreadable.safetensors"].write_bytes(base.read_bytes())
    unreadable["unreadable lora.safetensors"].write_bytes(lora.read_bytes())
    unreadable["unreadable.yaml"].write_text("steps: 1\n")
    for path in unreadable.values():
        path.chmod(0)
    cases += [
        Case("mode-000 checkpoint", "traceback", train(base_file=unreadable["unreadable.safetensors"]),
             ["unreadable.safetensors cannot be read: permission denied"], permissions=True),
        Case("mode-000 LoRA", "traceback", ["merge", "--lora", str(unreadable["unreadable lora.safetensors"]),
                                            "--out", str(root / "out.safetensors")],
             ["unreadable lora.safetensors cannot be read: permission denied"], permissions=True),
        Case("mode-000 YAML", "traceback", ["train", str(unreadable["unreadable.yaml"])],
             ["unreadable.yaml cannot be read: Permission denied"], permissions=True),
        Case("int32 weight in a checkpoint", "traceback", train(base_file=int32),
             ["int32 weight.safetensors is damaged: UNet weight", "is stored as int32"]),
        Case("string offsets in a header", "traceback",
             ["inspect", str(_header_file(root / "offsets.safetensors",
                                           {"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}},
                                           bytes(4)))],
             ["tensor 'w' has a malformed header entry"]),
        Case("a list as __metadata__", "traceback",
             ["inspect", str(_header_file(root / "meta.safetensors",
                                           {"__metadata__": ["x"], "w": {"dtype": "F32", "shape": [1],
                                                                         "data_offsets": [0, 4]}}, bytes(4)))],
             ["its __metadata__ is a list, not a table"]),
        Case("Latin-1 YAML", "traceback", ["train", str(latin)], ["latin1.yaml is not UTF-8 text (byte 0xe9"]),
        Case("binary YAML", "traceback", ["train", str(binary)], ["binary.yaml is not UTF-8 text"]),
        Case("--set steps=1e400", "traceback", train("--set", "steps=1e400"), ["steps: '1e400' is not a valid int."]),
        Case("--seed beyond 64 bits", "traceback", train("--seed", str(2**70)),
             ["seed: is 1180591620717411303424; use a whole number that fits in 64 bits"]),
        Case("prompt with a non-UTF-8 byte", "traceback",
             train("--instance-prompt", "caf\udce9"), ["instance_prompt: 'caf\\udce9' holds bytes that are not UTF-8"]),
        Case("kohya folder with a non-UTF-8 byte", "traceback",
             train(images_dir=root / "latin folder"), ["holds bytes that are not UTF-8 text; rename the folder"],
             posix_bytes=True),
        # misleading messages
        Case("a settings section that is a list", "message", ["train", str(section)],
             ["section.yaml: lora must be a mapping of settings, not list."]),
        Case("inspect a folder", "message", ["inspect", str(images)], ["is a folder, not a file"]),
        Case("inspect an empty safetensors", "message", ["inspect", str(_header_file(root / "empty.safetensors", {}))],
             ["holds no tensors: it is an empty file"]),
        Case("header over 100 MB", "message",
             ["inspect", str(_raw(root / "big header.safetensors", struct.pack("<Q", 2**40) + b"{}"))],
             ["its header claims 1099511627776 bytes, over the 100 MB"]),
        Case("truncated header", "message",
             ["inspect", str(_raw(root / "cut header.safetensors", struct.pack("<Q", 100) + b'{"a"'))],
             ["cut header.safetensors is truncated (its header claims 100 bytes; the file has 12)"]),
        Case("empty zip .ckpt", "message", ["inspect", str(_empty_zip(root / "empty.ckpt"))],
             ["empty.ckpt is truncated or corrupt, or not a PyTorch checkpoint"]),
    ]
    if os.name == "posix":
        os.symlink(root / "loop b", root / "loop a")
        os.symlink(root / "loop a", root / "loop b")
        latin_folder = os.path.join(os.fsencode(root / "latin folder"), b"3_caf\xe9")
        os.makedirs(latin_folder)
        Image.new("RGB", (64, 64)).save(os.fsdecode(os.path.join(latin_folder, b"0.png")))
        cases.append(Case("inspect a symlink loop", "message", ["inspect", str(root / "loop a")],
                          ["is a symbolic link that loops back on itself"]))

    # NaN and infinity, in and out
    nan_up = _changed(lora, root / "nan up.safetensors", lambda t: t[_first(t, "lora_up.weight")].fill_(float("nan")))
    nan_alpha = _changed(lora, root / "nan alpha.safetensors", lambda t: t[_first(t, "alpha")].fill_(float("nan")))
    nan_base = _changed(base, root / "nan base.safetensors",
                        lambda t: t[_first(t, "weight", "model.diffusion_model.")].fill_(float("inf")))
    out = str(root / "out.safetensors")
    cases += [
        Case("merge a LoRA with a NaN up weight", "non-finite", ["merge", "--lora", str(nan_up), "--out", out],
             ["nan up.safetensors is broken:", "holds NaN or infinite values"]),
        Case("merge a LoRA with a NaN alpha", "non-finite", ["merge", "--lora", str(nan_alpha), "--out", out],
             ["nan alpha.safetensors is broken:", ".alpha holds NaN or infinite values"]),
        Case("bake a NaN LoRA", "non-finite", ["merge", "--base", str(base), "--lora", str(nan_up), "--out", out],
             ["nan up.safetensors is broken:"]),
        Case("resize a NaN LoRA", "non-finite", ["resize", str(nan_up), "--rank", "2", "--out", out],
             ["nan up.safetensors is broken:"]),
        Case("combine overflowing fp16", "non-finite", ["merge", "--lora", str(lora), "1e30", "--out", out],
             ["Refusing to write", "NaN or infinite value(s)", "Nothing was written"]),
        Case("train on a base with infinite weights", "non-finite", train(base_file=nan_base),
             ["nan base.safetensors is broken: UNet weight", "Re-download it or choose another model"]),
    ]

    # smaller: captions, every damaged image at once before loading, a LoRA that names another model
    binary_caption = _images(root / "binary caption", 2)
    (binary_caption / "0.txt").write_bytes(b"a photo\x00\x01\x02 of sks")
    damaged = _images(root / "damaged", 3)
    for name in ("0.png", "1.png"):
        data = (damaged / name).read_bytes()
        (damaged / name).write_bytes(data[: len(data) * 2 // 3])
    self_attention = _changed(lora, root / "sd15 self-attention.safetensors",
                              lambda t: [t.pop(k) for k in list(t) if "attn1" not in k])
    cases += [
        Case("binary .txt caption", "smaller", train(images_dir=binary_caption),
             ["Caption file", "0.txt is not text (it holds control bytes such as NUL)"]),
        Case("two damaged images, listed before loading", "smaller",
             train(images_dir=damaged, base_file=root / "not loaded.safetensors"),
             ["2 unusable image(s) in", "0.png is truncated or corrupt", "1.png is truncated or corrupt"]),
        Case("SD1.5 LoRA baked into SD2", "smaller", ["merge", "--base", str(sd2), "--lora", str(self_attention),
                                                      "--out", out],
             ["is a LoRA for Stable Diffusion 1.x, the model is Stable Diffusion 2.x",
              "Its metadata names the model it was made for"]),
    ]
    return cases


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _empty_zip(path: Path) -> Path:
    zipfile.ZipFile(path, "w").close()
    return path


def make_lora(base: Path, path: Path) -> Path:
    """A rank-4 LoRA for ``base`` with random factors, as a real training would leave it."""
    from trainers.checkpoint.loader import load_components
    from trainers.lora import LoraSettings, add_lora, save_lora

    components, settings = load_components(base), LoraSettings(rank=4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in add_lora(components, settings, seed=0):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return save_lora(components, settings, path, dtype=torch.float32)


def main() -> None:
    import tempfile

    from trainers.checkpoint.test_models import make_test_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        base = make_test_checkpoint("sd15", root / "base.safetensors", variant="tiny", seed=1)
        sd2 = make_test_checkpoint("sd2", root / "sd2.safetensors", variant="tiny", seed=1)
        cases = [c for c in build(root / "corpus", base, make_lora(base, root / "lora.safetensors"), sd2)
                 if os.name == "posix" or not c.posix_bytes]
    counts = Counter(case.kind for case in cases)
    for kind, meaning in CLASSES.items():
        print(f"{counts[kind]:3d}  {kind}: {meaning}")
    print(f"{len(cases):3d}  in all")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
