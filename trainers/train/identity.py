"""What a training state was trained on, recorded so a resume on other inputs is refused.

Settings alone do not pin a run down: the same ``base`` path may now hold another model, the same
``images`` folder other pictures. The state therefore keeps content fingerprints of the base model
(its weights, sampled) and of the training data as the loop sees it (the exact pixels encoded, with
captions and repeats), and a resume compares them and names what changed.
"""

from __future__ import annotations

import hashlib

from ..checkpoint.components import SDComponents
from ..errors import BoothError
from .batches import EncodedSet
from .cache import fingerprint


def model_identity(components: SDComponents) -> str:
    """Fingerprint of the base model; take it before anything trains."""
    return fingerprint(components.unet, components.vae, *components.text_encoders)


def data_identity(*sets: EncodedSet | None) -> dict:
    """Fingerprint and size of the instance (and class) data: the exact pixels encoded (not the
    latents, which a GPU may encode a bit differently after the cache is cleared), captions, repeats."""
    present = [s for s in sets if s is not None]
    digest = hashlib.blake2b("".join(f"{s.name}:{s.content};" for s in present).encode(), digest_size=12)
    return {"data": digest.hexdigest(), "latents": {s.name: len({id(x) for x in s.latents}) for s in present}}


def check_same_inputs(saved: dict | None, now: dict, file: object) -> None:
    """Refuse to continue a state on another model or other images (states without fingerprints,
    from earlier versions, are accepted as they are)."""
    if not saved:
        return
    changed = []
    if saved.get("model") != now["model"]:
        changed.append("the base model is not the one it was trained from")
    if saved.get("data") != now["data"]:
        before, after = saved.get("latents", {}), now["latents"]
        changed.append("the training images or captions differ (encoded pictures then: "
                       f"{_counts(before)}; now: {_counts(after)})")
    if changed:
        raise BoothError(f"Cannot resume from {file}: {'; '.join(changed)}. Resume with the inputs it was trained "
                         "on, or start a new run in another output_dir.")


def _counts(counts: dict) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.items()) or "none"
