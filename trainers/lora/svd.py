"""Low-rank factorisation of a weight difference by truncated SVD, and how much of it a rank keeps.

By the Eckart–Young theorem the rank-r truncated SVD is the best rank-r approximation in the
Frobenius norm, and its error is the norm of the dropped singular values. So the share of a
difference that a rank keeps, ``‖Δ_r‖ / ‖Δ‖``, follows from the singular values alone; it is the
number reported for extraction, re-compression and resizing (kohya calls it ``sv_fro``).
Convolution differences are factorised as the matrix ``[out, in * kh * kw]``, which is exactly
what a LoCon ``down`` ([rank, in, kh, kw]) times a 1x1 ``up`` can express.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import BoothError


@dataclass
class LowRank:
    """``up @ down`` approximates a difference; ``singular_values`` are all of the difference's."""

    up: torch.Tensor  # [out, rank]
    down: torch.Tensor  # [rank, in * kh * kw]
    singular_values: torch.Tensor  # descending, float64, on the CPU

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def norm(self) -> float:
        """Frobenius norm of the whole difference."""
        return float(self.singular_values.square().sum().sqrt())

    @property
    def kept_norm(self) -> float:
        """Frobenius norm of the part kept (``‖up @ down‖``)."""
        return float(self.singular_values[: self.rank].square().sum().sqrt())

    @property
    def error(self) -> float:
        """Frobenius norm of what was dropped: ``‖Δ - up @ down‖`` (Eckart–Young)."""
        return float(self.singular_values[self.rank:].square().sum().sqrt())

    @property
    def kept_share(self) -> float:
        """``‖up @ down‖ / ‖Δ‖``; 1 for a difference of zero."""
        return self.kept_norm / self.norm if self.norm > 0 else 1.0


def kept_shares(singular_values: torch.Tensor) -> torch.Tensor:
    """Share of the Frobenius norm kept at rank 1, 2, ... (one entry per singular value)."""
    energy = singular_values.double().square().cumsum(0)
    total = energy[-1] if energy.numel() else torch.tensor(0.0, dtype=torch.float64)
    if total <= 0:
        return torch.ones_like(energy)
    return (energy / total).sqrt()


def check_rank_settings(rank: int | None, keep: float | None) -> None:
    """Refuse a rank or kept share that cannot select a rank; the message names the setting."""
    if rank is None and keep is None:
        raise BoothError("Give a rank (e.g. 16) or a share of the difference to keep (e.g. 0.9), or both.")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise BoothError(f"rank must be a whole number of at least 1, not {rank!r}.")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1
                             or not math.isfinite(keep)):
        raise BoothError(f"keep must be a share above 0 and at most 1 (e.g. 0.9 keeps 90% of the difference's "
                         f"Frobenius norm), not {keep!r}.")


def choose_rank(singular_values: torch.Tensor, rank: int | None = None, keep: float | None = None) -> int:
    """The rank to keep: ``rank`` at most, and with ``keep`` the smallest rank whose kept share reaches it.

    Never more than the number of non-zero singular values (extra rank would add only zeros), never
    less than 1.
    """
    check_rank_settings(rank, keep)
    nonzero = int((singular_values > 0).sum())
    chosen = min(rank, nonzero) if rank is not None else nonzero
    if keep is not None and nonzero:
        shares = kept_shares(singular_values[:nonzero])
        # Tolerate float rounding of the total so keep=1.0 stops at the last non-zero value.
        reached = int((shares < keep - 1e-9).sum()) + 1
        chosen = min(chosen, reached)
    return max(chosen, 1)


def _split(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced factors: both carry the square root of the singular values, so neither under- or
    overflows when stored in fp16."""
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def factorise(delta: torch.Tensor, *, rank: int | None = None, keep: float | None = None,
              device: torch.device | str | None = None) -> LowRank:
    """Truncated SVD of a dense difference ([out, in] or [out, in, kh, kw], flattened to a matrix).

    The SVD runs in float32 on ``device`` (default: where ``delta`` is); factors come back on the CPU.
    """
    matrix = delta.to(device or delta.device, torch.float32).flatten(1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    chosen = choose_rank(s, rank, keep)
    up, down = _split(u, s, vh, chosen)
    return LowRank(up.cpu(), down.cpu(), s.double().cpu())


def refactorise(up: torch.Tensor, down: torch.Tensor, *, rank: int | None = None, keep: float | None = None,
                device: torch.device | str | None = None) -> LowRank:
    """Truncated SVD of ``up @ down`` (up [out, k], down [k, n], e.g. several LoRAs side by side)
    without forming the dense product: with ``up = Qu Ru`` and ``down^T = Qd Rd`` only the small
    ``Ru Rd^T`` (at most k x k) needs an SVD. Runs in float64, so the result is as exact as the inputs.
    """
    target = device or up.device
    q_up, r_up = torch.linalg.qr(up.to(target, torch.float64).flatten(1))
    q_down, r_down = torch.linalg.qr(down.to(target, torch.float64).flatten(1).T)
    u, s, vh = torch.linalg.svd(r_up @ r_down.T, full_matrices=False)
    chosen = choose_rank(s, rank, keep)
    small_up, small_down = _split(u, s, vh, chosen)
    return LowRank((q_up @ small_up).float().cpu(), (small_down @ q_down.T).float().cpu(), s.cpu())
