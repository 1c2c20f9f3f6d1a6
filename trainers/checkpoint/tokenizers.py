"""CLIP tokenizers built offline from a vocabulary that is already on the machine.

Stable Diffusion's tokenizers (CLIP-L for SD1.x, OpenCLIP for SD2.x and SDXL) share one BPE
vocabulary; they differ only in the padding token. We look for it, in order, in:

1. a folder the caller names (``vocab.json`` + ``merges.txt``), e.g. ComfyUI's ``comfy/sd1_tokenizer``;
2. the ``BOOTH_TOKENIZER_DIR`` environment variable (same kind of folder);
3. the ``bpe_simple_vocab_16e6.txt.gz`` file that the ``open_clip_torch`` package carries.

Nothing is downloaded. The gzip form is turned into ``vocab.json``/``merges.txt`` exactly as the
CLIP authors defined it (byte symbols, their end-of-word forms, the merges, two special tokens).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
from pathlib import Path

from ..errors import BoothError

VOCAB_SIZE = 49408
_MERGE_COUNT = VOCAB_SIZE - 256 - 256 - 2
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable-character table, in vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def _files_from_bpe_gz(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1:_MERGE_COUNT + 1]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + list(SPECIAL_TOKENS)
    return {token: index for index, token in enumerate(tokens)}, merges


def _open_clip_vocabulary() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it (and torchvision)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bpe_simple_vocab_16e6.txt.gz"
        if candidate.is_file():
            return candidate
    return None


def _files_from_folder(folder: Path) -> tuple[dict[str, int], list[str]]:
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [line for line in lines if line and not line.startswith("#version")]
    return vocab, merges


@functools.lru_cache(maxsize=None)
def vocabulary(explicit_dir: str | None = None) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """The CLIP BPE vocabulary and merges, found offline (see module docstring)."""
    searched = []
    for folder in (explicit_dir, os.environ.get("BOOTH_TOKENIZER_DIR")):
        if folder:
            if (Path(folder) / "vocab.json").is_file() and (Path(folder) / "merges.txt").is_file():
                vocab, merges = _files_from_folder(Path(folder))
                break
            searched.append(f"{folder} (needs vocab.json and merges.txt)")
    else:
        bpe_gz = _open_clip_vocabulary()
        if bpe_gz is None:
            searched.append("the open_clip_torch package (not installed)")
            raise BoothError("No CLIP tokenizer vocabulary found on this machine. Looked in: " + "; ".join(searched) +
                             ". Install it with `pip install --no-deps open_clip_torch`, or set BOOTH_TOKENIZER_DIR "
                             "to a folder with vocab.json and merges.txt (ComfyUI ships one in comfy/sd1_tokenizer).")
        vocab, merges = _files_from_bpe_gz(bpe_gz)
    if len(vocab) != VOCAB_SIZE:
        raise BoothError(f"The CLIP vocabulary found has {len(vocab)} tokens, expected {VOCAB_SIZE}.")
    return vocab, tuple(tuple(m.split(" ", 1)) for m in merges)


@functools.lru_cache(maxsize=None)
def clip_tokenizer(pad_token: str, explicit_dir: str | None = None):
    """A CLIPTokenizer (77 tokens) padding with ``pad_token`` ('<|endoftext|>' for CLIP-L, '!' for OpenCLIP)."""
    from transformers import CLIPTokenizer

    vocab, merges = vocabulary(explicit_dir)
    return CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m) for m in merges], pad_token=pad_token,
                         model_max_length=77)
