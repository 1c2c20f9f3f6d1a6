"""Instance and class images with their captions, as a torch Dataset of training-ready pixels.

A folder is read the way kohya sd-scripts users already lay them out, so existing datasets work
unchanged: images at the top level, or in subfolders named ``N_caption text`` where N is how often
each image is shown per epoch. A caption comes from, in order: a ``.txt`` file with the image's
name, the ``N_`` folder's text, the instance prompt.

Every image header is checked when the folder is scanned, so a bad file fails before a model is
loaded, and all bad files are reported at once rather than one per run.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import BoothError
from ..formatting import is_text, printable
from ..limits import MAX_EPOCH_SAMPLES, MAX_REPEATS
from .images import (IMAGE_SUFFIXES, MIN_SIDE, WHITE, Colour, Size, aspect_buckets, cover_crop, image_to_tensor,
                     load_image, nearest_bucket, read_image_size, to_rgb, validate_resolution)

logger = logging.getLogger(__name__)

CROPS = ("center", "random")
_KOHYA_FOLDER = re.compile(r"^(\d+)_(.*)$")
_CAPTION_SUFFIX = ".txt"
_MAX_LISTED = 10


@dataclass(frozen=True)
class ImageItem:
    """One training image: a file or an in-memory RGB image, its caption and how often it is shown per epoch.

    ``size`` is the displayed (width, height); it picks the aspect bucket without decoding the image.
    """

    source: Path | Image.Image
    caption: str
    repeats: int = 1
    size: Size | None = None


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass(frozen=True)
class ImageFolderScan:
    """What :func:`scan_image_folder` found: the usable images and everything it left out, with why."""

    folder: Path
    items: tuple[ImageItem, ...]
    skipped: tuple[SkippedFile, ...]

    @property
    def epoch_length(self) -> int:
        """Samples per epoch: every image counted once per repeat."""
        return sum(item.repeats for item in self.items)


def scan_image_folder(folder: str | os.PathLike, *, instance_prompt: str | None = None,
                      repeats: int = 1) -> ImageFolderScan:
    """Find the images in ``folder`` and in its ``N_caption`` subfolders, with captions and repeats.

    ``repeats`` applies to images outside ``N_`` folders (those use their N). Other files and folders
    are skipped, returned in ``skipped`` and logged as a warning. Raises BoothError if the folder is
    missing, holds no image, an image is unreadable, or an image has no caption from any source.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise BoothError(f"Image folder not found: {root}. Check the path (it must be a folder of images).")
    if not root.is_dir():
        raise BoothError(f"{root} is a file; give the folder that holds the training images.")
    if not 1 <= repeats <= MAX_REPEATS:
        raise BoothError(f"repeats is {repeats}; use 1 to {MAX_REPEATS:,}.")
    prompt = (instance_prompt or "").strip()

    images: list[tuple[Path, int, str, Path | None]] = []  # (path, repeats, folder caption, caption file)
    skipped: list[SkippedFile] = []
    _collect(root, repeats, "", images, skipped, allow_subfolders=True)

    if not images:
        found = "; ".join(f"{entry.path.name} ({entry.reason})" for entry in skipped[:_MAX_LISTED]) or "nothing"
        raise BoothError(f"No images in {root} (found: {found}). Add {', '.join(sorted(IMAGE_SUFFIXES))} files, "
                         "at the top level or in subfolders named like '10_sks dog'.")

    items, problems, uncaptioned = [], [], []
    for path, count, folder_caption, caption_file in images:
        try:
            size = read_image_size(path)
            load_image(path, min_short_side=MIN_SIDE)  # damaged pixel data shows now, not after the model loads
            caption = (_read_caption(caption_file) if caption_file else "") or folder_caption or prompt
        except BoothError as error:
            problems.append(str(error))
            continue
        if not is_text(caption):
            problems.append(f"{printable(path)}: its caption {printable(caption)!r} (from its folder's name) holds "
                            "bytes that are not UTF-8 text; rename the folder.")
        elif caption:
            items.append(ImageItem(path, caption, count, size))
        else:
            uncaptioned.append(path)
    if problems:
        raise BoothError(f"{len(problems)} unusable image(s) in {root}:\n  - " + _listing(problems))
    check_epoch_size(items, str(root))
    if uncaptioned:
        raise BoothError(f"No caption for {len(uncaptioned)} image(s) in {root}:\n  - " + _listing(uncaptioned)
                         + "\nGive an instance prompt, put a .txt caption with the same name beside each image, "
                         "or move the images into a folder named like '10_sks dog'.")
    if skipped:
        logger.warning("Skipped %d item(s) in %s:\n  - %s", len(skipped), root,
                       _listing([f"{entry.path.name}: {entry.reason}" for entry in skipped]))
    return ImageFolderScan(root, tuple(items), tuple(skipped))


def folder_is_read(root: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether :func:`scan_image_folder` on ``root`` reads images from ``folder`` (resolved, through links):
    ``root`` itself or one of its ``N_caption`` subfolders."""
    root_path, path = Path(root).resolve(), Path(folder).resolve()
    if path == root_path:
        return True
    match = _KOHYA_FOLDER.match(path.name)
    return path.parent == root_path and bool(match) and int(match.group(1)) >= 1


def check_epoch_size(items: Sequence[ImageItem], source: str) -> None:
    """Refuse an epoch too long to index (each sample costs memory in the shuffle)."""
    samples = sum(item.repeats for item in items)
    if samples > MAX_EPOCH_SAMPLES:
        raise BoothError(f"{source} gives {samples:,} samples per epoch ({len(items)} image(s), repeats included); "
                         f"Booth allows {MAX_EPOCH_SAMPLES:,}. Lower the repeats (data.repeats or the N of "
                         "'N_caption' folders).")


def check_batch_fits(items: Sequence[ImageItem], batch_size: int, source: str) -> None:
    """Refuse a batch larger than an epoch: it could only be filled by showing an image twice in one
    step, and the batcher would silently train on smaller batches than asked for instead."""
    samples = sum(item.repeats for item in items)
    if batch_size > samples:
        raise BoothError(f"batch_size is {batch_size}, but {source} gives only {samples} sample(s) per epoch "
                         f"({len(items)} image(s), repeats included). Lower batch_size to {samples} or less, "
                         "or raise data.repeats (or add images).")


def validate_image_batch(images: object, name: str = "images") -> torch.Tensor:
    """Check an image batch in ComfyUI's convention (float BHWC in [0, 1], 1/3/4 channels); HWC becomes a batch of one."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise BoothError(f"{name} must be a float image tensor (batch, height, width, channels), "
                         f"not {type(images).__name__}.")
    batch = images.unsqueeze(0) if images.dim() == 3 else images
    if batch.dim() != 4 or batch.shape[-1] not in (1, 3, 4) or batch.shape[0] == 0:
        raise BoothError(f"{name} has shape {tuple(images.shape)}; expected (batch, height, width, 1, 3 or 4 channels).")
    if min(batch.shape[1], batch.shape[2]) < MIN_SIDE:
        raise BoothError(f"{name} are {batch.shape[2]}x{batch.shape[1]} pixels; use at least {MIN_SIDE}x{MIN_SIDE}.")
    return batch


class InstanceDataset(torch.utils.data.Dataset):
    """Images -> ``{"pixels": float32 CHW in [-1, 1], "caption": str, "index": int}``.

    Each image appears ``repeats`` times per epoch; ``index`` is the image's position in ``items``
    (the same for every repeat), so per-image caches can key on it. Random crops and flips come from
    a generator seeded by (seed, epoch, sample index), so a sample is the same whatever the worker
    or the order it is fetched in; call :meth:`set_epoch` before each epoch for fresh augmentation.
    With ``buckets`` each image keeps its aspect ratio at about ``resolution**2`` pixels; batch
    samples of one size together with :func:`bucket_batches`.
    """

    def __init__(self, items: Sequence[ImageItem], *, resolution: int, crop: str = "center", flip: bool = False,
                 buckets: bool = False, seed: int = 0, background: Colour = WHITE):
        if not items:
            raise BoothError("The dataset has no images; add at least one.")
        if any(item.repeats < 1 for item in items):
            raise BoothError("Every image's repeats must be at least 1.")
        check_epoch_size(items, "the images")
        if crop not in CROPS:
            raise BoothError(f"crop is {crop!r}; use one of {', '.join(CROPS)}.")
        self.items = tuple(items)
        self.resolution = validate_resolution(resolution)
        self.crop, self.flip, self.buckets, self.seed = crop, flip, buckets, seed
        self.background = background
        self.epoch = 0
        self._ends = list(itertools.accumulate(item.repeats for item in self.items))  # repeats stay implicit
        square = (self.resolution, self.resolution)
        if buckets:
            choices = aspect_buckets(self.resolution)
            self._item_sizes = [nearest_bucket(item.size or _source_size(item.source), choices) for item in self.items]
        else:
            self._item_sizes = [square] * len(self.items)

    @classmethod
    def from_image_batch(cls, images: torch.Tensor, caption: str, *, repeats: int = 1, background: Colour = WHITE,
                         **options) -> "InstanceDataset":
        """A dataset over an in-memory batch (float BHWC in [0, 1]), every image with the same caption.

        ``options`` are the constructor's keywords (``resolution`` required).
        """
        batch = validate_image_batch(images)
        if not caption or not caption.strip():
            raise BoothError("The instance prompt is empty; describe the subject, e.g. 'a photo of sks dog'.")
        if not 1 <= repeats <= MAX_REPEATS:
            raise BoothError(f"repeats is {repeats}; use 1 to {MAX_REPEATS:,}.")
        pixels = batch.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        items = []
        for array in pixels:
            image = to_rgb(Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array), background)
            items.append(ImageItem(image, caption.strip(), repeats, image.size))
        return cls(items, background=background, **options)

    def __len__(self) -> int:
        return self._ends[-1]

    def _item_of(self, index: int) -> int:
        """The image shown as sample ``index``: samples list each image ``repeats`` times in a row."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return bisect.bisect_right(self._ends, index)

    def __getitem__(self, index: int) -> dict:
        item_index = self._item_of(index)
        item = self.items[item_index]
        size = self._item_sizes[item_index]
        generator = self._generator(index) if self.crop == "random" or self.flip else None
        image = cover_crop(self._load(item, size), size, generator=generator if self.crop == "random" else None)
        if self.flip and torch.rand((), generator=generator) < 0.5:
            image = ImageOps.mirror(image)
        return {"pixels": image_to_tensor(image), "caption": item.caption, "index": item_index}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def sample_size(self, index: int) -> Size:
        """(width, height) of sample ``index``'s pixels."""
        return self._item_sizes[self._item_of(index)]

    def _load(self, item: ImageItem, size: Size) -> Image.Image:
        if isinstance(item.source, Image.Image):
            return to_rgb(item.source, self.background)
        return load_image(item.source, background=self.background, min_short_side=max(size))

    def _generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))


def bucket_batches(dataset: InstanceDataset, batch_size: int, *, seed: int = 0, epoch: int = 0) -> list[list[int]]:
    """Shuffled batches of sample indices in which all samples share one size (a DataLoader ``batch_sampler``).

    Each bucket is shuffled and cut into batches, then the batches are shuffled, so every sample
    appears once per epoch; a bucket's last batch may be smaller.
    """
    if batch_size < 1:
        raise BoothError(f"batch_size is {batch_size}; it must be at least 1.")
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]))
    by_size: dict[Size, list[int]] = {}
    for index in range(len(dataset)):
        by_size.setdefault(dataset.sample_size(index), []).append(index)
    batches = []
    for size in sorted(by_size):
        members = by_size[size]
        order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
        batches += [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def preview_batch(dataset: InstanceDataset, max_images: int = 8) -> torch.Tensor:
    """The first ``max_images`` distinct images, centre-cropped square: float BHWC in [0, 1] for a preview output."""
    if max_images < 1:
        raise BoothError(f"max_images is {max_images}; it must be at least 1.")
    square = (dataset.resolution, dataset.resolution)
    tensors = [image_to_tensor(cover_crop(dataset._load(item, square), square)) for item in dataset.items[:max_images]]
    return torch.stack(tensors).add_(1.0).div_(2.0).permute(0, 2, 3, 1).contiguous()


def _collect(folder: Path, repeats: int, folder_caption: str, images: list, skipped: list[SkippedFile],
             allow_subfolders: bool) -> None:
    """Append (path, repeats, folder caption) for each image in ``folder``; record everything else as skipped."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise BoothError(f"Cannot list {folder}: {exc.strerror or exc}.") from None
    stems_with_images = {p.stem for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    captions = {p.stem: p for p in sorted(entries, key=lambda p: p.suffix == _CAPTION_SUFFIX)  # x.txt over x.TXT
                if p.is_file() and p.suffix.lower() == _CAPTION_SUFFIX}
    for entry in entries:
        if entry.name.startswith("."):
            skipped.append(SkippedFile(entry, "hidden"))
        elif entry.is_dir():
            match = _KOHYA_FOLDER.match(entry.name) if allow_subfolders else None
            if match and int(match.group(1)) > MAX_REPEATS:
                raise BoothError(f"Folder {entry} asks for {match.group(1)} repeats; use at most {MAX_REPEATS:,} "
                                 f"(rename it, e.g. '10_{match.group(2)}').")
            if match and int(match.group(1)) >= 1:
                _collect(entry, int(match.group(1)), match.group(2).strip(), images, skipped, allow_subfolders=False)
            else:
                why = "folder name is not 'N_caption' with N >= 1 (e.g. '10_sks dog')" if allow_subfolders \
                    else "nested folder (only one level of 'N_caption' folders is read)"
                skipped.append(SkippedFile(entry, why))
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            images.append((entry, repeats, folder_caption, captions.get(entry.stem)))
        elif entry.suffix.lower() == _CAPTION_SUFFIX:
            if entry.stem not in stems_with_images:
                skipped.append(SkippedFile(entry, "caption with no image of the same name"))
        else:
            skipped.append(SkippedFile(entry, f"not an image ({entry.suffix or 'no extension'})"))


def _read_caption(path: Path) -> str:
    """A sidecar caption's text with whitespace collapsed ('' if empty).

    Editors save captions in whatever encoding the system uses: UTF-8 (with or without BOM) and
    UTF-16 with BOM are recognised, anything else is read as Windows-1252 and then Latin-1, which
    cannot fail, so an odd encoding costs an accent at worst, never the run. A file holding control
    bytes (NUL and the like) is not text: it is refused rather than trained on as a caption.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BoothError(f"Caption file {path} cannot be read: {exc.strerror or exc}.") from None
    encodings = ("utf-16",) if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig", "cp1252", "latin-1")
    for encoding in encodings:
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = "\0"
    if any(ord(ch) < 32 and not ch.isspace() for ch in text):
        raise BoothError(f"Caption file {path} is not text (it holds control bytes such as NUL); write the caption "
                         "as plain text or remove the file.")
    return " ".join(text.split())


def _source_size(source: Path | Image.Image) -> Size:
    return source.size if isinstance(source, Image.Image) else read_image_size(source)


def _listing(entries: Sequence[object]) -> str:
    lines = [str(entry) for entry in entries[:_MAX_LISTED]]
    if len(entries) > _MAX_LISTED:
        lines.append(f"... and {len(entries) - _MAX_LISTED} more")
    return "\n  - ".join(lines)
