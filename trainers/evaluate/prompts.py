"""The evaluation prompt set and the identifier stripping that CLIP-T needs.

The default prompts are the DreamBooth paper's evaluation lists (Ruiz et al., 2023): 25 prompts per
subject kind, ``{}`` standing for the subject (identifier + class, e.g. "sks dog"). Live subjects
(pets, people) get accessories and outfits, objects get material and shape changes.

CLIP-T measures whether an image shows what the prompt asks for. CLIP has never seen the made-up
identifier, so it is removed before scoring: "a sks dog in the snow" is scored as "a dog in the snow".
"""

from __future__ import annotations

import re
from typing import Iterable

from ..errors import BoothError

_SHARED = (
    "a {} in the jungle",
    "a {} in the snow",
    "a {} on the beach",
    "a {} on a cobblestone street",
    "a {} on top of pink fabric",
    "a {} on top of a wooden floor",
    "a {} with a city in the background",
    "a {} with a mountain in the background",
    "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest",
)
_RECOLOURED = ("a red {}", "a purple {}", "a shiny {}", "a wet {}", "a cube shaped {}")

OBJECT_PROMPTS: tuple[str, ...] = _SHARED + (
    "a {} with a wheat field in the background",
    "a {} with a tree and autumn leaves in the background",
    "a {} with the Eiffel Tower in the background",
    "a {} floating on top of water",
    "a {} floating in an ocean of milk",
    "a {} on top of green grass with sunflowers around it",
    "a {} on top of a mirror",
    "a {} on top of the sidewalk in a crowded street",
    "a {} on top of a dirt road",
    "a {} on top of a white rug",
) + _RECOLOURED

LIVE_SUBJECT_PROMPTS: tuple[str, ...] = _SHARED + (
    "a {} wearing a red hat",
    "a {} wearing a santa hat",
    "a {} wearing a rainbow scarf",
    "a {} wearing a black top hat and a monocle",
    "a {} in a chef outfit",
    "a {} in a firefighter outfit",
    "a {} in a police outfit",
    "a {} wearing pink glasses",
    "a {} wearing a yellow shirt",
    "a {} in a purple wizard outfit",
) + _RECOLOURED


def default_prompts(subject: str, *, live: bool = False, count: int | None = None) -> list[str]:
    """The paper's prompts for ``subject`` ("sks dog"); ``count`` keeps the first N (quick runs)."""
    if not subject.strip():
        raise BoothError("subject is empty; set it to the identifier and class, e.g. 'sks dog'.")
    templates = LIVE_SUBJECT_PROMPTS if live else OBJECT_PROMPTS
    return [template.format(subject.strip()) for template in templates[:count]]


def fill_prompts(prompts: Iterable[str], subject: str) -> list[str]:
    """User prompts may use ``{}`` for the subject too; prompts without it are kept as written."""
    return [prompt.replace("{}", subject.strip()) for prompt in prompts]


def strip_identifiers(prompt: str, identifiers: Iterable[str]) -> str:
    """``prompt`` without the identifier words (whole words, any case), spaces tidied.

    "a sks dog in the snow" with ["sks"] -> "a dog in the snow"; "a photo of sks, sitting" keeps the comma.
    """
    words = [word.strip() for word in identifiers if word.strip()]
    if not words:
        return prompt
    pattern = r"(?<![\w])(?:" + "|".join(re.escape(word) for word in words) + r")(?![\w])"
    stripped = re.sub(pattern, " ", prompt, flags=re.IGNORECASE)
    stripped = re.sub(r"\s+([,.;:!?])", r"\1", stripped)
    return " ".join(stripped.split())
