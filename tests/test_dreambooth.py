"""DreamBooth (the whole UNet fine-tuned) on tiny random models: the saved checkpoint, prior
preservation, the text encoder's schedule and the UNet's moving average."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from trainers.checkpoint.conditioning import encode_prompts, predict_noise
from trainers.checkpoint.loader import load_components
from trainers.config import TrainConfig, apply_overrides
from drawn_images import draw_subject_images
from trainers.errors import BoothError
from trainers.files import load_tensors
from trainers.train import train
from trainers.train.ema import ExponentialMovingAverage
from trainers.train.recipes import RECIPES

PROMPT = "a photo of sks star"
CLASS_PROMPT = "a photo of a circle"


pytestmark = pytest.mark.usefixtures("one_thread")


def draw_circles(folder: Path, count: int = 4) -> Path:
    """Class images unlike the subject: yellow discs on blue-violet backgrounds."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = Image.new("RGB", (64, 64), (30 + 40 * index, 90, 200 - 30 * index))
        ImageDraw.Draw(image).ellipse((8 + 3 * index, 10, 50 + 2 * index, 54 - 2 * index), fill=(250, 240, 60))
        image.save(folder / f"circle_{index}.png")
    return folder


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dreambooth")
    draw_subject_images(root / "images", count=4, size=80)
    draw_circles(root / "circles")
    return root


def config_for(work: Path, name: str, base: Path, *overrides: str) -> TrainConfig:
    """A tiny DreamBooth run without prior preservation, saved in fp32 so weights compare exactly."""
    config = TrainConfig(method="dreambooth", base=str(base), images=str(work / "images"), instance_prompt=PROMPT,
                         output_dir=str(work / name), cache_dir=str(work / "cache"), steps=2, batch_size=2,
                         learning_rate=1e-3, save_dtype="fp32", mixed_precision="no")
    return apply_overrides(config, ["data.resolution=64", "prior.enabled=false", f"prior.class_prompt={CLASS_PROMPT}",
                                    f"prior.class_images={work / 'circles'}", "prior.num_class_images=4", *overrides])


def unet_output(components, prompt: str = PROMPT) -> torch.Tensor:
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return predict_noise(components, latents, torch.tensor([500]), encode_prompts(components, [prompt]), (64, 64))


def weights(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    tensors, _ = load_tensors(path)
    return {key: value for key, value in tensors.items() if key.startswith(prefix)}


UNET, TEXT = "model.diffusion_model.", "cond_stage_model."


@pytest.fixture(scope="module")
def two_steps(work, tiny_checkpoint):
    """The reference run: 2 steps, text encoder frozen, no EMA."""
    return train(config_for(work, "two_steps", tiny_checkpoint("sd15")))


def test_checkpoint_round_trips_through_the_loader_and_reproduces_the_trained_unet(two_steps, tiny_checkpoint):
    base_file = tiny_checkpoint("sd15")
    tensors, meta = load_tensors(two_steps.output)
    base_tensors, _ = load_tensors(base_file)
    assert tensors.keys() == base_tensors.keys()  # the original single-file layout, every part included
    reloaded = load_components(two_steps.output)
    assert reloaded.family == "sd15" and reloaded.prediction_type == "epsilon"
    torch.testing.assert_close(unet_output(reloaded), unet_output(two_steps.components), rtol=0, atol=1e-6)
    assert not torch.equal(unet_output(reloaded), unet_output(load_components(base_file)))
    saved = yaml.safe_load(meta["booth.config"])
    assert (saved["method"], saved["learning_rate"], saved["steps"]) == ("dreambooth", 1e-3, 2)
    assert (meta["booth.method"], meta["booth.steps"], meta["modelspec.architecture"]) == (
        "dreambooth", "2", "stable-diffusion-v1")


def test_defaults_are_the_dreambooth_recipe_and_save_fp16(two_steps, tmp_path):
    defaults = TrainConfig(method="dreambooth").resolved()
    assert (defaults.learning_rate, defaults.prior.enabled, defaults.save_dtype) == (2e-6, True, "fp16")
    assert (defaults.dreambooth.train_text_encoder_steps, defaults.dreambooth.use_ema) == (0, False)
    assert defaults.sample.scheduler == "ddim"
    half = RECIPES["dreambooth"].save(two_steps.components, defaults, tmp_path / "half.safetensors", {})
    tensors, _ = load_tensors(half)
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.float16}
    torch.testing.assert_close(unet_output(load_components(half, dtype=torch.float32)),
                               unet_output(two_steps.components), rtol=0, atol=2e-2)


def test_text_encoder_and_vae_are_untouched_when_frozen(two_steps, tiny_checkpoint):
    base = tiny_checkpoint("sd15")
    for prefix in (TEXT, "first_stage_model."):
        tuned, original = weights(two_steps.output, prefix), weights(base, prefix)
        assert tuned and all(torch.equal(tuned[k], original[k]) for k in original), prefix
    changed = weights(two_steps.output, UNET)
    original = weights(base, UNET)
    assert sum(not torch.equal(changed[k], original[k]) for k in original) > 0.9 * len(original)


def test_text_encoder_trains_for_the_first_n_steps_only(work, tiny_checkpoint, two_steps):
    base = tiny_checkpoint("sd15")
    first_two = train(config_for(work, "te_2_of_2", base, "dreambooth.train_text_encoder_steps=2"))
    first_two_of_four = train(config_for(work, "te_2_of_4", base, "dreambooth.train_text_encoder_steps=2", "steps=4"))
    text_after_2, text_after_4 = weights(first_two.output, TEXT), weights(first_two_of_four.output, TEXT)
    untouched = weights(base, TEXT)
    assert any(not torch.equal(text_after_2[k], untouched[k]) for k in untouched)  # it trained...
    assert all(torch.equal(text_after_4[k], text_after_2[k]) for k in untouched)  # ...then stayed as it was
    unet_after_2, unet_after_4 = weights(first_two.output, UNET), weights(first_two_of_four.output, UNET)
    assert any(not torch.equal(unet_after_4[k], unet_after_2[k]) for k in unet_after_2)  # the UNet went on
    # Training the text encoder changes the UNet's course too: not the frozen run's weights.
    frozen = weights(two_steps.output, UNET)
    assert any(not torch.equal(unet_after_2[k], frozen[k]) for k in frozen)
    _, meta = load_tensors(first_two_of_four.output)
    assert float(meta["ss_text_encoder_lr"]) == 1e-3


def class_loss(components, folder: Path, seeds: int = 8) -> float:
    """The denoising loss on the class images with the class prompt, over fixed noise and timesteps."""
    pixels = torch.stack([torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
                          for path in sorted(folder.glob("*.png"))]).float() / 127.5 - 1
    total = 0.0
    with torch.no_grad():
        latents = components.vae.encode(pixels).latent_dist.mean * components.vae.config.scaling_factor
        cond = encode_prompts(components, [CLASS_PROMPT] * len(latents))
        for seed in range(seeds):
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
            timesteps = torch.full((len(latents),), 50 + 120 * seed)
            noisy = components.scheduler.add_noise(latents, noise, timesteps)
            total += float((predict_noise(components, noisy, timesteps, cond, (64, 64)) - noise).square().mean())
    return total / seeds


def test_prior_preservation_keeps_the_class_prompt_loss_where_it_was(work, tiny_checkpoint):
    """A base that knows the class (circles), fine-tuned on the subject (stars) with the same seed:
    with prior preservation the class-prompt loss does not rise; without it, it ends clearly higher."""
    pretrain = config_for(work, "knows_circles", tiny_checkpoint("sd15"), "steps=20", f"images={work / 'circles'}",
                          f"instance_prompt={CLASS_PROMPT}")
    base = train(pretrain).output
    before = class_loss(load_components(base), work / "circles")
    drift = {}
    for prior in (True, False):
        result = train(config_for(work, f"prior_{prior}", base, "steps=8", "batch_size=1", f"prior.enabled={prior}"))
        drift[prior] = class_loss(result.components, work / "circles") - before
    assert drift[True] <= 0.0, drift  # the class is kept (here about -0.03: the class images still teach)
    assert drift[True] < drift[False] - 0.01, drift  # without them the subject pulls the class away (-0.006)


def test_ema_saves_the_warmed_up_average_of_every_step(work, tiny_checkpoint, two_steps):
    """decay_n = min(decay, (1 + n) / (10 + n)): 0.1 after step 1, 2/11 after step 2, so the saved UNet
    is 2/11 * (0.1 * base + 0.9 * w1) + 9/11 * w2, where w1, w2 are the raw weights after each step."""
    base = tiny_checkpoint("sd15")
    one_step = train(config_for(work, "one_step", base, "steps=1"))
    averaged = train(config_for(work, "ema", base, "dreambooth.use_ema=true", "dreambooth.ema_decay=0.999"))
    w0, w1, w2 = weights(base, UNET), weights(one_step.output, UNET), weights(two_steps.output, UNET)
    saved = weights(averaged.output, UNET)
    for key in w0:
        expected = 2 / 11 * (0.1 * w0[key] + 0.9 * w1[key]) + 9 / 11 * w2[key]
        torch.testing.assert_close(saved[key], expected, rtol=0, atol=1e-6)
    text = weights(averaged.output, TEXT)
    assert all(torch.equal(text[k], v) for k, v in weights(base, TEXT).items())  # only the UNet is averaged


def test_ema_average_and_its_saved_state():
    weight = torch.nn.Parameter(torch.zeros(3))
    ema = ExponentialMovingAverage({"unet.w": weight}, decay=0.5)
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            weight.fill_(value)
        ema.update()
    # decays 0.1, 2/11, then min(0.5, 3/12) = 0.25
    first = 0.9 * 1.0
    second = 2 / 11 * first + 9 / 11 * 2.0
    torch.testing.assert_close(ema.average["unet.w"], torch.full((3,), 0.25 * second + 0.75 * 3.0))
    assert ema.current_decay() == pytest.approx(4 / 13)  # still warming up towards 0.5
    restored = ExponentialMovingAverage({"unet.w": torch.nn.Parameter(torch.zeros(3))}, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 3 and torch.equal(restored.average["unet.w"], ema.average["unet.w"])
    ema.copy_to_weights()
    assert torch.equal(weight.detach(), ema.average["unet.w"])
    other = ExponentialMovingAverage({"unet.v": torch.nn.Parameter(torch.zeros(3))}, decay=0.5)
    with pytest.raises(BoothError, match="EMA weights do not match"):
        other.load_state_dict(ema.state_dict())
