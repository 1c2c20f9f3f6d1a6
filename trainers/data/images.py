"""Any image file a user drops in a folder -> clean 8-bit RGB pixels of the size training needs.

Training folders hold phone photos (EXIF-rotated), screenshots with transparency, scans in
grayscale or CMYK, 16-bit exports and the odd broken download. Each becomes an RGB image as the
user sees it in a viewer; anything Pillow cannot decode becomes a :class:`BoothError` naming the
file, never a Pillow stack trace.

Limits, chosen so mistakes are caught instead of silently trained on:

* An image under ``MIN_SIDE`` pixels on a side is refused: it is almost always a placeholder or
  tracking pixel, and upscaled it would teach the model blur.
* An image over ``MAX_PIXELS`` (Pillow's own refusal threshold, ~179 MP) is refused; anything
  below is accepted. Large ones are shrunk while loading: JPEGs are decoded at 1/2, 1/4 or 1/8
  scale (so a 50 MP photo never sits in memory at full size), other formats are box-reduced by a
  whole factor right after decoding.
* Embedded colour profiles are ignored: pixel values are taken as sRGB.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import BoothError
from ..limits import MAX_ASPECT, MAX_RESOLUTION

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
WHITE = (255, 255, 255)
MIN_SIDE = 8
MAX_PIXELS = 2 * 89_478_485
BUCKET_STEP = 64

Size = tuple[int, int]
Colour = tuple[int, int, int]

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # orientations that rotate by 90 degrees


def validate_resolution(value: object, name: str = "resolution") -> int:
    """Return ``value`` as an int if it is a multiple of 8 (the VAE's downscale factor) up to ``MAX_RESOLUTION``."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < value <= MAX_RESOLUTION
            or value % 8):
        raise BoothError(f"{name} is {value!r}; use a positive multiple of 8 up to {MAX_RESOLUTION} (e.g. 512 for "
                         "SD1.5, 1024 for SDXL).")
    return int(value)


def read_image_size(path: str | os.PathLike) -> Size:
    """(width, height) as displayed (EXIF rotation applied), reading only the header.

    Cheap enough to check a whole folder up front: it finds non-images, tiny and oversized images
    before a model is loaded. Truncated pixel data is only found by :func:`load_image`.
    """
    with _opened(path) as image:
        width, height = image.size
        if _orientation(image) in _SWAPS_SIDES:
            width, height = height, width
    return width, height


def load_image(path: str | os.PathLike, *, background: Colour = WHITE, min_short_side: int | None = None) -> Image.Image:
    """Decode an image file to RGB as a viewer shows it.

    ``min_short_side``: the caller needs no more than this many pixels on the short side, so big
    images are shrunk by whole factors while decoding, keeping at least that many. Transparent
    pixels are composited onto ``background``.
    """
    with _opened(path) as image:
        if min_short_side and image.format == "JPEG":
            image.draft(None, _shrunk_size(image.size, min_short_side))
        try:
            image.load()
            if _orientation(image) != 1:
                ImageOps.exif_transpose(image, in_place=True)
        except Exception as exc:  # Pillow's decoders raise many types for damaged data
            raise BoothError(f"{path} is truncated or corrupt ({_reason(exc)}). Re-export or remove it.") from None
        rgb = _reduce(to_rgb(image, background), min_short_side)
        return rgb.copy() if rgb is image else rgb  # the opened image is unusable once closed


def to_rgb(image: Image.Image, background: Colour = WHITE) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency composited onto ``background``."""
    if image.mode in _HIGH_BIT_MODES:
        image = _to_8bit(image)
    if image.mode == "RGB":
        return image
    try:
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, tuple(background))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        return image.convert("RGB")
    except ValueError:
        raise BoothError(f"Images in colour mode {image.mode!r} are not supported; save the image as RGB.") from None


def aspect_buckets(resolution: int, *, step: int = BUCKET_STEP, max_ratio: float = 2.0) -> tuple[Size, ...]:
    """Training sizes (width, height) of about ``resolution**2`` pixels, sorted from tallest to widest.

    Sides are multiples of ``step`` so latents tile the UNet evenly; the area never exceeds the
    square's, so no bucket needs more memory than ``resolution x resolution`` (always included).
    """
    resolution = validate_resolution(resolution)
    area = resolution * resolution
    buckets = {(resolution, resolution)}
    for width in range(step, int(resolution * max_ratio) + 1, step):
        height = area // width // step * step
        if height >= step and max(width, height) / min(width, height) <= max_ratio:
            buckets |= {(width, height), (height, width)}  # portrait and landscape alike
    return tuple(sorted(buckets, key=lambda size: size[0] / size[1]))


def nearest_bucket(size: Size, buckets: tuple[Size, ...]) -> Size:
    """The bucket whose aspect ratio is closest to ``size``'s (compared as log ratios, so 2:1 and 1:2 are symmetric)."""
    aspect = math.log(size[0] / size[1])
    return min(buckets, key=lambda bucket: abs(math.log(bucket[0] / bucket[1]) - aspect))


def cover_crop(image: Image.Image, size: Size, *, generator: torch.Generator | None = None) -> Image.Image:
    """Scale ``image`` to just cover ``size``, then crop to it: centred, or at a random offset drawn from ``generator``.

    The crop is chosen in the scaled image's pixels but only that region is resampled, so memory
    stays at ``size`` whatever the image's aspect ratio.
    """
    target_w, target_h = size
    width, height = image.size
    scale = max(target_w / width, target_h / height)
    scaled = (max(target_w, round(width * scale)), max(target_h, round(height * scale)))
    left = _crop_offset(scaled[0] - target_w, generator)
    top = _crop_offset(scaled[1] - target_h, generator)
    if scaled == image.size:
        return image.crop((left, top, left + target_w, top + target_h))
    x, y = width / scaled[0], height / scaled[1]
    box = (left * x, top * y, (left + target_w) * x, (top + target_h) * y)
    return image.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> float32 CHW tensor in [-1, 1], the range the VAE encodes."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))
    return pixels.permute(2, 0, 1).to(torch.float32).div_(127.5).sub_(1.0)


@contextlib.contextmanager
def _opened(path: str | os.PathLike) -> Iterator[Image.Image]:
    """``Image.open`` with every failure, and sizes out of bounds, turned into a BoothError naming the file."""
    file = Path(path)
    if not file.is_file():
        raise BoothError(f"Image not found: {file}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
    except Image.DecompressionBombError:
        raise BoothError(f"{file} is too large (over {MAX_PIXELS:,} pixels). Downscale it first.") from None
    except Image.UnidentifiedImageError:
        raise BoothError(f"{file} is not an image Pillow can read, despite its {file.suffix!r} extension. "
                         "Remove it or re-export it as PNG or JPEG.") from None
    except PermissionError:
        raise BoothError(f"{file} cannot be read: permission denied.") from None
    except Exception as exc:  # broken headers raise SyntaxError, struct.error, ValueError, ...
        raise BoothError(f"{file} is corrupt ({_reason(exc)}). Re-export or remove it.") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise BoothError(f"{file} is too large ({width}x{height}, over {MAX_PIXELS:,} pixels). Downscale it first.")
        if min(width, height) < MIN_SIDE:
            raise BoothError(f"{file} is only {width}x{height} pixels; training images need at least "
                             f"{MIN_SIDE}x{MIN_SIDE} (ideally the training resolution). Remove or replace it.")
        if max(width, height) > MAX_ASPECT * min(width, height):
            raise BoothError(f"{file} is {width}x{height} pixels, a strip more than {MAX_ASPECT} times longer than "
                             "it is wide; a training crop of it would show almost nothing. Crop it to the subject "
                             "or remove it.")
        yield image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright); unreadable EXIF counts as upright rather than failing the image."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF blocks raise assorted errors; the pixels are still usable
        return 1


def _shrunk_size(size: Size, min_short_side: int) -> Size:
    """The smallest size with ``size``'s aspect whose short side is still ``min_short_side``."""
    scale = min(1.0, min_short_side / min(size))
    return math.ceil(size[0] * scale), math.ceil(size[1] * scale)


def _reduce(image: Image.Image, min_short_side: int | None) -> Image.Image:
    """Box-average an RGB image by the largest whole factor that keeps the short side >= ``min_short_side``."""
    factor = min(image.size) // min_short_side if min_short_side else 1
    return image.reduce(factor) if factor >= 2 else image


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> 8-bit L, scaled by its range rather than clipped.

    16-bit modes always span 0-65535. Mode 'I' and 'F' carry no declared range, so it is read from
    the data: values up to 1.0 (float only) are [0, 1], up to 255 are 8-bit, up to 65535 are 16-bit,
    anything larger is scaled by its maximum.
    """
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "F" and peak <= 1.0:
        full_scale = 1.0
    elif peak <= 255:
        full_scale = 255.0
    elif peak <= 65535:
        full_scale = 65535.0
    else:
        full_scale = peak
    scaled = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)


def _crop_offset(slack: int, generator: torch.Generator | None) -> int:
    if generator is None or slack == 0:
        return slack // 2
    return int(torch.randint(0, slack + 1, (1,), generator=generator))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
