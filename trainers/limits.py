"""Upper bounds on what an input can make Booth allocate, checked where the input is read.

A few kilobytes of input (a PNG header, a folder name, one setting) can otherwise ask for gigabytes:
inside ComfyUI an out-of-memory kill takes the whole server down, so these are refused before
anything is allocated. Each bound is far above any real use. No heavy imports: the settings
validation uses these too.
"""

from __future__ import annotations

MAX_RESOLUTION = 4096  # pixels a side; the nodes' widget stops here too (SDXL trains at 1024)
MAX_ASPECT = 16  # longest side / shortest side of a training image: a strip is not a picture
MAX_REPEATS = 10_000  # per image per epoch (kohya folders use 1-100)
MAX_EPOCH_SAMPLES = 1_000_000  # images x repeats in one epoch
