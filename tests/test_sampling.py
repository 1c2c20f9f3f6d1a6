"""Image generation on tiny random-weight models: shapes, reproducibility, settings and files."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.checkpoint.test_models import build_random_components
from trainers.errors import BoothError
from trainers.sampling import (GenerationStopped, SampleSettings, decode_latents, generate, make_sampler,
                               native_resolution, save_images, to_pil)

FAST = SampleSettings(steps=2)
PROMPTS = ["a photo of sks dog", "a cat", "a red house"]


@pytest.fixture(scope="module")
def sd15():
    return build_random_components("sd15", variant="tiny")


@pytest.fixture(scope="module")
def sdxl():
    return build_random_components("sdxl", variant="tiny")


def test_images_are_bhwc_in_unit_range_at_native_resolution(sd15):
    images = generate(sd15, PROMPTS[:2], seed=0, settings=FAST)
    assert native_resolution(sd15) == 64
    assert images.shape == (2, 64, 64, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.01  # a decoded picture, not a constant fill


def test_explicit_size_and_other_schedulers_on_sdxl(sdxl):
    for scheduler in ("euler", "dpm++"):
        settings = SampleSettings(steps=2, height=48, width=80, scheduler=scheduler)
        images = generate(sdxl, ["a dog"], seed=1, settings=settings)
        assert images.shape == (1, 48, 80, 3) and torch.isfinite(images).all()


def test_same_seed_repeats_whatever_the_batch_size_and_seed_plus_i_continues(sd15):
    """Class-image top-ups rely on image i using seed + i: generating from seed+1 continues the sequence."""
    one_batch = generate(sd15, PROMPTS, seed=5, settings=FAST, batch_size=3)
    assert torch.equal(one_batch, generate(sd15, PROMPTS, seed=5, settings=FAST, batch_size=3))
    in_pairs = generate(sd15, PROMPTS, seed=5, settings=FAST, batch_size=2)
    torch.testing.assert_close(one_batch, in_pairs, atol=1e-4, rtol=0)
    continued = generate(sd15, PROMPTS[1:], seed=6, settings=FAST, batch_size=1)
    torch.testing.assert_close(one_batch[1:], continued, atol=1e-4, rtol=0)


def test_different_seeds_prompts_and_guidance_give_different_images(sd15):
    base = generate(sd15, ["a dog"], seed=0, settings=FAST)
    assert (base - generate(sd15, ["a dog"], seed=1, settings=FAST)).abs().max() > 0.01
    assert (base - generate(sd15, ["a cat"], seed=0, settings=FAST)).abs().max() > 1e-3
    unguided = SampleSettings(steps=2, guidance_scale=1.0)
    assert (base - generate(sd15, ["a dog"], seed=0, settings=unguided)).abs().max() > 1e-3
    negative = SampleSettings(steps=2, negative_prompt="blurry")
    assert (base - generate(sd15, ["a dog"], seed=0, settings=negative)).abs().max() > 1e-3


def test_v_prediction_model_samples_with_v_prediction(sd15):
    v_model = build_random_components("sd15", variant="tiny", prediction_type="v_prediction")
    for name in ("ddim", "euler", "dpm++"):
        assert make_sampler(v_model, name).config.prediction_type == "v_prediction"
    settings = SampleSettings(steps=2, scheduler="dpm++")
    v_images = generate(v_model, ["a dog"], seed=0, settings=settings)
    assert torch.isfinite(v_images).all() and v_images.shape == (1, 64, 64, 3)
    # Same weights and noise: only the interpretation of the UNet output differs.
    assert (v_images - generate(sd15, ["a dog"], seed=0, settings=settings)).abs().max() > 1e-3


@pytest.mark.parametrize("settings, batch_size, named", [
    (SampleSettings(steps=0), 1, "steps"),
    (SampleSettings(height=63), 1, "height"),
    (SampleSettings(width=-8), 1, "width"),
    (SampleSettings(width=0), 1, "width"),
    (SampleSettings(guidance_scale=float("nan")), 1, "guidance_scale"),
    (SampleSettings(scheduler="heun"), 1, "scheduler"),
    (SampleSettings(), 0, "batch_size"),
])
def test_bad_settings_name_the_setting(sd15, settings, batch_size, named):
    with pytest.raises(BoothError, match=named):
        generate(sd15, ["a dog"], seed=0, settings=settings, batch_size=batch_size)


def test_progress_counts_every_step_and_stop_raises(sd15):
    seen: list[tuple[int, int]] = []
    generate(sd15, PROMPTS, seed=0, settings=FAST, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 4) for i in range(1, 5)]  # 2 steps x 2 batches
    calls = []
    with pytest.raises(GenerationStopped, match="after 3 of 4 steps"):
        generate(sd15, PROMPTS, seed=0, settings=FAST, batch_size=2,
                 should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert issubclass(GenerationStopped, BoothError)


def test_leaves_training_mode_and_global_rng_untouched(sd15):
    sd15.unet.train()
    rng = torch.get_rng_state()
    try:
        generate(sd15, ["a dog"], seed=0, settings=SampleSettings(steps=2, scheduler="euler"))
        assert sd15.unet.training and all(m.training for m in sd15.unet.modules())
        assert not sd15.vae.training
        assert torch.equal(rng, torch.get_rng_state())
    finally:
        sd15.unet.eval()


def test_no_prompts_give_an_empty_batch(sd15):
    assert generate(sd15, [], seed=0, settings=FAST).shape == (0, 64, 64, 3)


def test_fp16_vae_overflow_is_decoded_again_in_float32(sd15):
    components = dataclasses.replace(sd15, vae=copy.deepcopy(sd15.vae))
    with torch.no_grad():
        components.vae.decoder.conv_in.weight.mul_(1e5)  # activations beyond fp16's range
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = decode_latents(components, latents)
        components.vae.half()
        raw = components.vae.decode(latents.half() / components.vae.config.scaling_factor).sample
        assert not torch.isfinite(raw).all()
        images = decode_latents(components, latents)
    assert torch.isfinite(images).all()
    torch.testing.assert_close(images, reference, atol=0.02, rtol=0)
    assert next(components.vae.parameters()).dtype == torch.float16


def test_save_images_writes_readable_pngs(tmp_path):
    images = torch.rand(2, 64, 48, 3, generator=torch.Generator().manual_seed(0))
    paths = save_images(images, tmp_path / "samples", "step_100")
    assert [p.name for p in paths] == ["step_100_000.png", "step_100_001.png"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [p.name for p in paths]  # no temp files
    for path, image in zip(paths, images):
        with Image.open(path) as loaded:
            assert loaded.format == "PNG" and loaded.mode == "RGB" and loaded.size == (48, 64)
            expected = (image.numpy() * 255).round().astype(np.uint8)
            assert np.array_equal(np.asarray(loaded), expected)


def test_to_pil_converts_layouts_and_refuses_others():
    gray = torch.full((1, 4, 6, 1), 0.5)
    assert to_pil(gray)[0].size == (6, 4) and to_pil(gray)[0].getpixel((0, 0)) == (128, 128, 128)
    single = to_pil(torch.ones(4, 6, 3))
    assert len(single) == 1 and single[0].getpixel((5, 3)) == (255, 255, 255)
    assert to_pil([Image.new("L", (3, 2))])[0].mode == "RGB"
    with pytest.raises(BoothError, match="batch, height, width, channels"):
        to_pil(torch.zeros(1, 3, 8, 8))  # BCHW by mistake
