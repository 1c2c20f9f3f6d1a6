"""A toy CLIP judge: a contrastive image-text model trained on the toy world, saved as a transformers CLIPModel
folder, so `compare` scores CLIP-T (prompt fidelity) and CLIP-I (subject fidelity) with a model that knows
the world. Its own accuracy is measured by zero-shot caption retrieval on pictures it never saw.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint.tokenizers import clip_tokenizer
from .world import BACKGROUNDS, COLOURS, SHAPES, Scene, caption, pixels, random_scene, render, training_caption

IMAGE_SIZE = 64
Log = Callable[[str], None]


def judge_config():
    from transformers import CLIPConfig

    tower = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4)
    return CLIPConfig(text_config=dict(tower, max_position_embeddings=77, eos_token_id=49407, bos_token_id=49406,
                                       pad_token_id=49407),
                      vision_config=dict(tower, image_size=IMAGE_SIZE, patch_size=8), projection_dim=64)


def _clip_pixels(images: list) -> torch.Tensor:
    """The judge's input exactly as the evaluator prepares it."""
    from ..evaluate.models import CLIP_MEAN, CLIP_STD, ImagePreprocess

    prepare = ImagePreprocess(IMAGE_SIZE, (IMAGE_SIZE, IMAGE_SIZE), CLIP_MEAN, CLIP_STD)
    return prepare((pixels(images).permute(0, 2, 3, 1) + 1) / 2)


def _tokens(tokenizer, texts: list[str]) -> dict:
    return tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")


def train_clip_judge(steps: int = 1500, batch: int = 128, seed: int = 0, log: Log = print):
    """Symmetric InfoNCE on freshly drawn world pictures and their (sometimes partial) captions."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(judge_config())
    tokenizer = clip_tokenizer("<|endoftext|>")
    rng = random.Random(seed + 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    model.train()
    for step in range(steps):
        scenes = [random_scene(rng) for _ in range(batch)]
        texts = [training_caption(scene, rng) for scene in scenes]
        out = model(input_ids=_tokens(tokenizer, texts)["input_ids"],
                    pixel_values=_clip_pixels([render(scene, rng.randrange(1 << 30)) for scene in scenes]))
        # pictures that fit the same caption are not negatives of each other
        same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        loss = (torch.nn.functional.cross_entropy(out.logits_per_image, target)
                + torch.nn.functional.cross_entropy(out.logits_per_text, target)) / 2
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == steps - 1:
            log(f"judge step {step}/{steps}: loss {float(loss):.3f}")
    return model.eval().requires_grad_(False), tokenizer


def all_captions() -> tuple[list[str], list[tuple[str, str, str]]]:
    """Every full caption of the world with its (shape, colour, background)."""
    triples = list(itertools.product(SHAPES, COLOURS, BACKGROUNDS))
    return [caption(Scene(s, c, b, 0.5, 0.5, 0.3, 0.0)) for s, c, b in triples], triples


@torch.no_grad()
def attribute_accuracy(image_embeddings: torch.Tensor, truths: list[tuple[str, str, str]], text_embeddings: torch.Tensor,
                       triples: list[tuple[str, str, str]]) -> dict[str, float]:
    """Zero-shot retrieval: each picture's best-matching full caption, scored per attribute and whole."""
    best = (image_embeddings @ text_embeddings.T).argmax(dim=1).tolist()
    picked = [triples[index] for index in best]
    names = ("shape", "colour", "background")
    scores = {name: sum(p[i] == t[i] for p, t in zip(picked, truths)) / len(truths) for i, name in enumerate(names)}
    scores["all three"] = sum(p == t for p, t in zip(picked, truths)) / len(truths)
    return scores


def held_out_scenes(count: int, seed: int) -> list[Scene]:
    """Scenes from a seed no training stage uses."""
    rng = random.Random(10_000 + seed)
    return [random_scene(rng) for _ in range(count)]


def judge_accuracy(judge, count: int = 600, seed: int = 0) -> dict[str, float]:
    """The judge's zero-shot accuracy on held-out world pictures (a ClipJudge from evaluate.models)."""
    scenes = held_out_scenes(count, seed)
    images = (pixels([render(scene, 50_000 + i) for i, scene in enumerate(scenes)]) + 1) / 2
    texts, triples = all_captions()
    return attribute_accuracy(judge.embed_images(images.permute(0, 2, 3, 1)), [(s.shape, s.colour, s.background)
                              for s in scenes], judge.embed_texts(texts), triples)


def save_judge(model, folder: str | Path) -> Path:
    """A transformers CLIPModel folder in half precision (the evaluator reads it back as float32)."""
    model.half().save_pretrained(str(folder))
    model.float()
    return Path(folder)


def prompt_following(components, judge, count: int = 60, seed: int = 0, steps: int = 20) -> dict[str, float]:
    """How often a text-to-image model draws what a full caption asks for, as the judge reads its pictures."""
    from ..sampling import SampleSettings, generate

    scenes = held_out_scenes(count, seed + 1)
    images = generate(components, [caption(scene) for scene in scenes], seed=seed, batch_size=16,
                      settings=SampleSettings(steps=steps, guidance_scale=7.5))
    texts, triples = all_captions()
    return attribute_accuracy(judge.embed_images(images), [(s.shape, s.colour, s.background) for s in scenes],
                              judge.embed_texts(texts), triples)
