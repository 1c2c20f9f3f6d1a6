"""Encoded training examples and which of them form each micro-batch.

Batch order is a pure function of (seed, micro-batch number): each epoch is a seeded shuffle, so a
resumed run picks exactly the batches the uninterrupted run would have, with nothing to save.
Examples are grouped by latent shape (aspect buckets) so every batch stacks into one tensor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch


def derived_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed for one purpose (e.g. ("noise", 12)), independent of every other purpose's."""
    text = ":".join(map(str, (seed, *labels))).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


@dataclass
class EncodedSet:
    """Cached latents (CHW, float32, CPU) with the caption each was trained with."""

    latents: list[torch.Tensor]
    captions: list[str]
    name: str = "instance"
    content: str = ""  # digest of the pixels, captions and repeats encoded (a resume checks it)
    _epochs: dict[tuple, list[list[int]]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.latents)

    def batches_of_epoch(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        """The epoch's batches: shuffled within each shape bucket, chunked, then the chunks shuffled."""
        key = (epoch, batch_size, seed)
        if key not in self._epochs:
            self._epochs = {}  # only the current epoch is ever needed again
            generator = torch.Generator().manual_seed(derived_seed(seed, self.name, "epoch", epoch))
            buckets: dict[tuple, list[int]] = {}
            for index, latent in enumerate(self.latents):
                buckets.setdefault(tuple(latent.shape), []).append(index)
            chunks = []
            for shape in sorted(buckets):
                members = buckets[shape]
                order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
                chunks += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
            self._epochs[key] = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
        return self._epochs[key]

    def batch(self, number: int, batch_size: int, seed: int) -> list[int]:
        """Example indices of micro-batch ``number`` (0-based, counted over the whole run)."""
        per_epoch = len(self.batches_of_epoch(0, batch_size, seed))
        epoch, position = divmod(number, per_epoch)
        return self.batches_of_epoch(epoch, batch_size, seed)[position]
