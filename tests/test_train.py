"""The training loop end to end on tiny random models: real checkpoints, images, LoRA files and state."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainers.checkpoint.conditioning import encode_prompts, predict_noise
from trainers.checkpoint.loader import load_components
from trainers.config import TrainConfig, apply_overrides, config_from_dict
from drawn_images import draw_subject_images
from trainers.demo import run_demo
from trainers.errors import BoothError
from trainers.evaluate.config import load_compare_config
from trainers.files import load_tensors
from trainers.lora import apply_lora, read_lora
from trainers.progress import ConsoleProgress, RecordingProgress
from trainers.train import train
from trainers.train.batches import EncodedSet
from trainers.train.cache import fingerprint
from trainers.train.noise import min_snr_weights, training_target
from trainers.train.optim import lr_multiplier, make_optimizer

PROMPT = "a photo of sks star"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    draw_subject_images(root / "images", count=4, size=80)
    for index, path in enumerate(draw_subject_images(root / "mixed", count=4, size=96)):
        with Image.open(path) as image:  # two wide, two tall: two aspect buckets
            image.crop((0, 16, 96, 80) if index % 2 else (16, 0, 80, 96)).save(path)
    return root


def config_for(work: Path, name: str, base: Path, *overrides: str) -> TrainConfig:
    """A tiny LoRA run; every run shares one cache folder, as runs on one machine would."""
    config = TrainConfig(method="lora", base=str(base), images=str(work / "images"), instance_prompt=PROMPT,
                         output_dir=str(work / name), cache_dir=str(work / "cache"), steps=4, batch_size=2,
                         learning_rate=1e-3, save_dtype="fp32", mixed_precision="no")
    return apply_overrides(config, ["data.resolution=64", "prior.class_prompt=a photo of a star",
                                    "prior.num_class_images=2", "prior.generation_steps=2", *overrides])


def unet_output(components, prompt: str = PROMPT) -> torch.Tensor:
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond = encode_prompts(components, [prompt])
        return predict_noise(components, latents, torch.tensor([500]), cond, (64, 64))


def text_output(components, prompt: str = PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return encode_prompts(components, [prompt]).context


@pytest.fixture(scope="module")
def lora_run(work, tiny_checkpoint):
    """30 steps of LoRA on attention and conv layers at a high rate, so the loss has room to fall."""
    progress = RecordingProgress()
    config = config_for(work, "lora_run", tiny_checkpoint("sd15"), "steps=30", "learning_rate=1e-2",
                        "lora.unet_targets=[attention, conv]")
    return train(config, progress), progress


def test_instance_loss_falls(lora_run):
    result, _ = lora_run
    assert result.steps == 30 and len(result.losses) == 30
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_run_reports_progress_and_writes_its_record(lora_run):
    result, progress = lora_run
    assert progress.total_steps == 30 and [s[0] for s in progress.steps] == list(range(1, 31))
    assert [s[2] for s in progress.steps] == result.losses and all(s[3] == 1e-2 for s in progress.steps)
    out = Path(result.config.output_dir)
    rows = (out / "losses.csv").read_text().splitlines()
    assert rows[0] == "step,loss,instance_loss,prior_loss,lr" and len(rows) == 31
    assert (out / "loss.png").stat().st_size > 0
    tensors, meta = load_tensors(result.output)
    assert result.output == Path(result.config.output) and all(k.startswith("lora_unet_") for k in tensors)
    assert meta["ss_steps"] == "30" and meta["ss_resolution"] == "(64, 64)" and meta["ss_network_dim"] == "16"
    assert meta["booth.instance_prompt"] == PROMPT and meta["booth.seed"] == "0"
    assert float(meta["booth.training_seconds"]) > 0 and int(meta["booth.peak_memory_bytes"]) > 0
    import yaml

    assert config_from_dict(yaml.safe_load(meta["booth.config"])) == result.config


def test_saved_lora_on_fresh_base_reproduces_trained_unet(lora_run, tiny_checkpoint):
    result, _ = lora_run
    fresh = load_components(tiny_checkpoint("sd15"))
    before = unet_output(fresh)
    assert apply_lora(fresh, read_lora(result.output), 1.0) == []
    trained = unet_output(result.components)
    assert (trained - before).abs().max() > 1e-3  # the LoRA matters...
    assert torch.allclose(unet_output(fresh), trained, atol=1e-4, rtol=0)  # ...and the file holds all of it


def test_trained_text_encoder_is_in_the_file(work, tiny_checkpoint):
    """With gradient checkpointing on, so this also shows gradients get through checkpointed layers."""
    config = config_for(work, "text", tiny_checkpoint("sd15"), "steps=3", "learning_rate=1e-2",
                        "lora.text_encoder=true", "text_encoder_lr=2e-2", "gradient_checkpointing=true")
    result = train(config)
    tensors, meta = load_tensors(result.output)
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in tensors)
    assert meta["ss_text_encoder_lr"] == "0.02"
    fresh = load_components(tiny_checkpoint("sd15"))
    base_text = text_output(fresh)
    apply_lora(fresh, read_lora(result.output), 1.0)
    assert (text_output(result.components) - base_text).abs().max() > 1e-3
    assert torch.allclose(text_output(fresh), text_output(result.components), atol=1e-4, rtol=0)
    assert torch.allclose(unet_output(fresh), unet_output(result.components), atol=1e-4, rtol=0)


def test_learning_rate_zero_leaves_the_model_unchanged(work, tiny_checkpoint):
    images = torch.rand(3, 72, 64, 3, generator=torch.Generator().manual_seed(3))
    config = config_for(work, "lr0", tiny_checkpoint("sd15"), "learning_rate=0", "steps=2", "images=")
    result = train(config, instance_images=images)
    base = load_components(tiny_checkpoint("sd15"))
    assert torch.equal(unet_output(result.components), unet_output(base))
    tensors, _ = load_tensors(result.output)
    ups = [v for k, v in tensors.items() if k.endswith("lora_up.weight")]
    assert ups and all(torch.count_nonzero(v) == 0 for v in ups)


def test_same_seed_same_weights_other_seed_other_weights(work, tiny_checkpoint):
    options = ("steps=3", "lora.dropout=0.1", "data.flip=true", "data.crop=random", "noise_offset=0.1")
    files = [train(config_for(work, name, tiny_checkpoint("sd15"), *options, f"seed={seed}")).output
             for name, seed in (("seed_a", 0), ("seed_b", 0), ("seed_c", 1))]
    (a, _), (b, _), (c, _) = (load_tensors(f) for f in files)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith("lora_up.weight"))


def test_aspect_buckets_train_beside_square_class_images(work, tiny_checkpoint):
    """Two wide and two tall images at 192 px fall in two buckets, so no instance batch has the class
    images' square shape: the two halves must go through the UNet separately."""
    progress = RecordingProgress()
    result = train(config_for(work, "buckets", tiny_checkpoint("sd15"), "method=dreambooth_lora", "data.buckets=true",
                              "data.resolution=192", f"images={work / 'mixed'}", "steps=2"), progress)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert all(row["prior_loss"] > 0 for row in result.history)


def test_an_fp16_checkpoint_trains_after_class_images_and_between_previews(work, tmp_path):
    """An fp16 file keeps its frozen weights in fp16 on the CPU; generating class images and previews
    (under inference mode) before and between training steps must not break the steps."""
    from trainers.checkpoint.test_models import make_test_checkpoint

    base = make_test_checkpoint("sd15", tmp_path / "tiny_fp16.safetensors", variant="tiny", seed=0, dtype=torch.float16)
    result = train(config_for(work, "fp16", base, "method=dreambooth_lora", "steps=2", "sample.every=1",
                              "sample.steps=2", f"cache_dir={tmp_path / 'cache'}"))
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert all(row["prior_loss"] > 0 for row in result.history) and len(result.samples) == 2
    assert result.components.unet.conv_in.weight.dtype == torch.float16  # stored in half, computed in float32


RESUMABLE = ("method=dreambooth_lora", "steps=6", "gradient_accumulation=2", "lora.dropout=0.1",
             "min_snr_gamma=5", "noise_offset=0.05", "lr_scheduler=cosine", "warmup_steps=2", "data.flip=true")


def test_resumed_run_equals_uninterrupted_run_bit_for_bit(work, tiny_checkpoint):
    base = tiny_checkpoint("sd15")
    whole = train(config_for(work, "whole", base, *RESUMABLE))
    stopper = RecordingProgress(stop_after=3)
    first = train(config_for(work, "parts", base, *RESUMABLE), stopper)
    assert first.stopped and first.steps == 3 and first.state.is_file() and first.output.is_file()
    assert any("(0 newly encoded" in m for m in stopper.messages)  # latents came from the shared cache
    second = train(config_for(work, "parts", base, *RESUMABLE), resume=True)
    assert second.steps == 6 and not second.stopped
    assert second.losses == whole.losses  # the history continues across the interruption
    done, _ = load_tensors(whole.output)
    resumed, _ = load_tensors(second.output)
    assert done.keys() == resumed.keys() and all(torch.equal(done[k], resumed[k]) for k in done)
    with pytest.raises(BoothError, match=r"settings changed since it was saved: learning_rate"):
        train(config_for(work, "parts", base, *RESUMABLE, "learning_rate=5e-4"), resume=first.state)


def test_class_images_are_generated_once_then_reused(work, tiny_checkpoint):
    base = tiny_checkpoint("sd15")
    options = ("method=dreambooth_lora", "steps=1", "cache_dir=" + str(work / "class_cache"))
    made = train(config_for(work, "class_a", base, *options))
    folder = made.class_images
    assert made.class_images_generated == 2 and len(list(folder.glob("*.png"))) == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    again = train(config_for(work, "class_b", base, *options))
    assert again.class_images == folder and again.class_images_generated == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")} == stamps
    more = train(config_for(work, "class_c", base, *options, "prior.num_class_images=3"))
    assert more.class_images_generated == 1 and len(list(folder.glob("*.png"))) == 3
    _, meta = load_tensors(more.output)
    assert meta["ss_num_reg_images"] == "3" and meta["booth.class_prompt"] == "a photo of a star"


def test_divergence_stops_with_advice_and_writes_nothing(work, tiny_checkpoint):
    config = config_for(work, "nan", tiny_checkpoint("sd15"), "learning_rate=1e6", "max_grad_norm=0", "steps=6",
                        "save_every=1")
    with pytest.raises(BoothError, match=r"diverged.*Lower learning_rate \(now 1e\+06; try 100000\)"):
        train(config)
    assert not Path(config.resolved().output).exists()
    saved = torch.load(Path(config.output_dir) / "state.pt", weights_only=True)  # from before the blow-up
    assert saved["step"] == 1 and all(torch.isfinite(v).all() for v in saved["params"].values())
    assert len((Path(config.output_dir) / "losses.csv").read_text().splitlines()) == 2  # header + the good step


def test_v_prediction_trains_on_velocity(work, tiny_checkpoint):
    config = config_for(work, "vpred", tiny_checkpoint("sd15"), "prediction_type=v_prediction", "min_snr_gamma=5",
                        "steps=2")
    result = train(config)
    assert result.components.scheduler.config.prediction_type == "v_prediction"
    assert all(torch.isfinite(torch.tensor(result.losses)))
    scheduler = result.components.scheduler
    latents, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    alpha = scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    sigma = (1 - scheduler.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(training_target(scheduler, latents, noise, t), alpha * noise - sigma * latents, atol=1e-6)
    snr = scheduler.alphas_cumprod[t] / (1 - scheduler.alphas_cumprod[t])
    assert torch.allclose(min_snr_weights(scheduler, t, 5.0), torch.clamp(snr, max=5) / (snr + 1))


def test_sdxl_tiny_trains_with_gradient_checkpointing(work, tiny_checkpoint):
    result = train(config_for(work, "sdxl", tiny_checkpoint("sdxl"), "steps=2", "batch_size=1",
                              "gradient_checkpointing=true"))
    tensors, meta = load_tensors(result.output)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and all(k.startswith("lora_unet_") for k in tensors)
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    ups = [v for k, v in tensors.items() if k.endswith("lora_up.weight")]
    assert all(torch.count_nonzero(v) > 0 for v in ups)  # gradients reached every adapter through the checkpoints


def test_dreambooth_fine_tunes_the_whole_unet(work, tiny_checkpoint):
    config = config_for(work, "full", tiny_checkpoint("sd15"), "method=dreambooth", "prior.enabled=false",
                        "steps=2", "learning_rate=1e-3")
    result = train(config)
    tuned, base = load_components(result.output), load_components(tiny_checkpoint("sd15"))
    assert not torch.equal(unet_output(tuned), unet_output(base))
    assert all(torch.equal(a, b) for a, b in zip(tuned.vae.state_dict().values(), base.vae.state_dict().values()))


def test_samples_snapshots_and_state_every_n_steps(work, tiny_checkpoint):
    progress = RecordingProgress()
    config = config_for(work, "samples", tiny_checkpoint("sd15"), "steps=4", "sample.every=2", "sample.steps=2",
                        "sample.prompts=[a sks star, a sks star on a table]", "save_every=2")
    result = train(config, progress)
    assert [step for step, _ in progress.samples] == [2, 4]
    assert all(images.shape == (2, 64, 64, 3) for _, images in progress.samples)
    assert [p.name for p in result.samples] == ["step_000002_000.png", "step_000002_001.png",
                                                "step_000004_000.png", "step_000004_001.png"]
    assert [p.name for p in result.snapshots] == ["lora-step000002.safetensors"]
    snapshot, meta = load_tensors(result.snapshots[0])
    final, _ = load_tensors(result.output)
    assert meta["ss_steps"] == "2" and snapshot.keys() == final.keys()
    assert any(not torch.equal(snapshot[k], final[k]) for k in final)
    assert torch.load(result.state, weights_only=True)["step"] == 4  # ready to be extended with more steps


def test_batches_cover_each_epoch_once_within_one_shape():
    latents = [torch.zeros(4, 8, 8)] * 5 + [torch.zeros(4, 8, 12)] * 3
    encoded = EncodedSet(latents, ["x"] * 8)
    epoch = [encoded.batch(n, 2, seed=0) for n in range(5)]
    assert sorted(i for batch in epoch for i in batch) == list(range(8))
    assert all(len({tuple(latents[i].shape) for i in batch}) == 1 for batch in epoch)
    assert [encoded.batch(n, 2, seed=0) for n in range(5, 10)] != epoch  # a new shuffle next epoch


def test_fingerprint_follows_the_weights():
    layer = torch.nn.Linear(4, 4)
    before = fingerprint(layer)
    with torch.no_grad():
        layer.weight[0, 0] += 1
    assert fingerprint(layer) != before


def test_schedules_and_optimizer_errors():
    assert [round(lr_multiplier(s, "constant", 3, 10), 3) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_multiplier(0, "cosine", 0, 10) == 1.0 and 0 < lr_multiplier(9, "cosine", 0, 10) < 0.03
    assert lr_multiplier(5, "linear", 0, 10) == 0.5
    param = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(BoothError, match="needs a CUDA GPU"):
        make_optimizer([{"params": [param], "lr": 1e-4}], "adamw8bit", 0.0, torch.device("cpu"))


def test_adamw_is_the_fused_kernel_and_steps_like_the_plain_loop():
    torch.manual_seed(0)
    start, grads = torch.randn(3, 64, 64), torch.randn(4, 3, 64, 64)
    weights = []
    for fused in (True, False):
        param = torch.nn.Parameter(start.clone())
        optimizer = (make_optimizer([{"params": [param], "lr": 1e-2}], "adamw", 0.01, torch.device("cpu")) if fused
                     else torch.optim.AdamW([param], lr=1e-2, weight_decay=0.01))
        assert optimizer.defaults["fused"] is (True if fused else None)
        for grad in grads:
            param.grad = grad.clone()
            optimizer.step()
        weights.append(param.detach())
    assert not torch.equal(weights[0], start)
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_console_progress_prints_loss_and_eta():
    stream = io.StringIO()
    console = ConsoleProgress(every=2, stream=stream)
    console.on_start(4)
    for step in range(1, 5):
        console.on_step(step, 4, 0.5, 1e-4)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("step 2/4  loss 0.5000  lr 1.00e-04") and "ETA" in lines[0]


@pytest.mark.slow
def test_demo_writes_everything_it_promises(tmp_path):
    import json

    summary = run_demo(tmp_path / "demo", steps=4)
    assert json.loads((tmp_path / "demo" / "summary.json").read_text()) == summary
    assert "toy world" in summary["note"] and summary["steps"] == 4 and summary["class_images_generated"] == 10
    for key in ("lora_file", "loss_plot", "comparison_grid"):
        assert Path(summary[key]).stat().st_size > 0, key
    assert summary["lora_bytes"] == Path(summary["lora_file"]).stat().st_size < summary["base_checkpoint_bytes"]
    assert summary["mean_abs_pixel_change_base_vs_lora"] > 0 and summary["cpu_threads"] == 1
    assert len(list((tmp_path / "demo" / "images").glob("*.png"))) == 5
    assert set(summary["scores"]) == {"base", "sks_heart_lora @ 0.5", "sks_heart_lora @ 1"}

    report = Path(summary["compare_report"]).read_text(encoding="utf-8")  # base vs LoRA at 0.5 and 1, scored
    assert report.count("data:image/png;base64,") >= 3 and "sks_heart_lora @ 0.5" in report
    with open(Path(summary["compare_report"]).with_name("summary.csv"), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["lora_strength"] for row in rows] == ["", "0.5", "1.0"]
    assert all(0 <= float(row["clip_t_mean"]) <= 100 and -1 <= float(row["clip_i_mean"]) <= 1 for row in rows)
    assert "dino_mean" not in rows[0]  # the toy world has no DINO judge
    assert rows[1]["training_method"] == "dreambooth_lora" and rows[1]["training_steps"] in ("4", "4.0")
    again = load_compare_config(summary["compare_config"])  # the CLI can rerun the comparison from this file
    assert again.variants[0].lora == summary["lora_file"] and Path(again.clip_model).is_dir()
