"""The toy world's parts that need no trained model: pictures, captions, the subject, the VAE rescale,
the judge's accuracy arithmetic and the study's table."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.checkpoint.families import detect
from trainers.files import load_tensors
from trainers.toyworld import TOY_CHECKPOINT, TOY_JUDGE
from trainers.toyworld.judges import all_captions, attribute_accuracy
from trainers.toyworld.pretrain import LATENT_STD, rescale_latents, toy_components
from trainers.toyworld.subject import FILL, INSTANCE_BACKGROUNDS, write_instance_images
from trainers.toyworld.world import (BACKGROUNDS, COLOURS, SHAPES, SIZE, caption, patterned_scene, pixels,
                                     random_scene, render)


def test_a_scene_renders_the_same_pixels_every_time():
    scene = random_scene(random.Random(3))
    first, again = np.asarray(render(scene, 7)), np.asarray(render(scene, 7))
    assert first.shape == (SIZE, SIZE, 3) and np.array_equal(first, again)
    assert not np.array_equal(first, np.asarray(render(scene, 8)))  # the seed varies the background texture


def test_the_shape_is_drawn_in_its_colour_at_its_place():
    scene = random_scene(random.Random(0), shape="square", colour="blue", background="snow")
    pixel = np.asarray(render(scene, 0))[round(scene.cy * SIZE), round(scene.cx * SIZE)]
    assert np.abs(pixel.astype(int) - COLOURS["blue"]).max() <= 2


def test_captions_follow_the_grammar():
    scene = random_scene(random.Random(0), shape="star", colour="orange", background="beach")
    assert caption(scene) == "a photo of an orange star on the beach"
    assert caption(scene, with_colour=False, with_background=False) == "a photo of a star"
    texts, triples = all_captions()
    assert len(texts) == len(set(texts)) == len(SHAPES) * len(COLOURS) * len(BACKGROUNDS) == len(triples)


def test_random_scenes_never_hide_the_shape_in_its_background():
    rng = random.Random(1)
    pairs = {(s.colour, s.background) for s in (random_scene(rng) for _ in range(3000))}
    assert ("white", "snow") not in pairs and ("green", "grass") not in pairs
    assert len(pairs) == len(COLOURS) * len(BACKGROUNDS) - 5


def test_subject_pictures_show_the_two_colour_heart_never_on_the_beach(tmp_path):
    paths = write_instance_images(tmp_path)
    assert len(paths) == len(INSTANCE_BACKGROUNDS) and "beach" not in INSTANCE_BACKGROUNDS
    pixels_seen = np.concatenate([np.asarray(Image.open(p)).reshape(-1, 3) for p in paths]).astype(int)
    for colour in FILL:
        assert (np.abs(pixels_seen - colour).max(axis=1) <= 3).sum() > 100


def test_rescaling_the_vae_changes_latents_not_pictures():
    vae = toy_components(seed=0).vae
    images = pixels([render(patterned_scene(random.Random(i)), i) for i in range(8)])
    with torch.no_grad():
        before = vae.decode(vae.encode(images).latent_dist.mean).sample
        rescale_latents(vae, images)
        latents = vae.encode(images).latent_dist.mean
        after = vae.decode(latents).sample
    assert float(latents.std()) == pytest.approx(LATENT_STD, rel=1e-4)
    assert torch.allclose(before, after, atol=1e-4)


def test_attribute_accuracy_counts_each_attribute():
    triples = [("circle", "red", "snow"), ("star", "blue", "beach")]
    texts = torch.eye(2)
    picked = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # both pictures read as the first caption
    scores = attribute_accuracy(picked, [triples[0], ("star", "red", "beach")], texts, triples)
    assert scores == {"shape": 0.5, "colour": 1.0, "background": 0.5, "all three": 0.5}


def test_the_shipped_toy_model_is_a_toy_variant_sd15_checkpoint():
    tensors, metadata = load_tensors(TOY_CHECKPOINT)
    found = detect(tensors, str(TOY_CHECKPOINT), metadata)
    assert (found.family, found.variant, found.prediction_type) == ("sd15", "toy", "epsilon")
    assert "toy world" in metadata["booth.toy_world"]
    assert json.loads((TOY_JUDGE / "config.json").read_text())["model_type"] == "clip"


def test_the_study_retrains_a_run_whose_settings_changed(tmp_path):
    from dataclasses import replace

    from trainers.config import save_config
    from trainers.toyworld.study import StudyRun, run_config, trained_with

    run = StudyRun("lora", "lora", "methods", prior=False)
    config = run_config(run, tmp_path, tmp_path / "images")
    model = tmp_path / "models" / "lora.safetensors"
    assert config.output == str(model)
    model.parent.mkdir()
    model.write_bytes(b"a model from an earlier study")
    assert not trained_with(config, tmp_path)  # no record of how it was trained
    save_config(config, tmp_path / "configs" / "lora.yaml")
    assert trained_with(config, tmp_path)
    assert not trained_with(run_config(replace(run, learning_rate=1e-2), tmp_path, tmp_path / "images"), tmp_path)
    model.unlink()
    assert not trained_with(config, tmp_path)
