"""Training settings: YAML round trips, overrides, method defaults and the messages for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainers.config import (TrainConfig, apply_overrides, config_from_dict, config_to_dict, dump_config, load_config,
                             save_config)
from trainers.errors import BoothError

# Training configs are the examples that name a method (examples/compare.yaml configures a comparison).
EXAMPLES = sorted(path for path in (Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")
                  if "method" in yaml.safe_load(path.read_text(encoding="utf-8")))


def valid(**changes) -> TrainConfig:
    return apply_overrides(TrainConfig(instance_prompt="a photo of sks dog"),
                           ["prior.class_prompt=a photo of dog", *(f"{k}={v}" for k, v in changes.items())])


def test_yaml_round_trip_keeps_every_value(tmp_path):
    config = apply_overrides(TrainConfig(), [
        "method=lora", "instance_prompt=a photo of sks dog, studio light", "steps=123", "learning_rate=3e-4",
        "lora.unet_targets=[attention, conv]", "lora.text_encoder=true", "data.buckets=yes", "prior.enabled=false",
        "sample.prompts=[a sks dog, on the beach]", "min_snr_gamma=5"])
    path = save_config(config, tmp_path / "run.yaml")
    again = load_config(path)
    assert again == config
    assert again.lora.unet_targets == ("attention", "conv")  # the LoRA network's own tuple type
    assert again.instance_prompt == "a photo of sks dog, studio light"
    assert again.sample.prompts == ["a sks dog", "on the beach"]
    assert yaml.safe_load(dump_config(config))["lora"]["unet_targets"] == ["attention", "conv"]


def test_overrides_coerce_types_and_leave_the_input_alone():
    base = TrainConfig()
    changed = apply_overrides(base, ["steps=2e3", "learning_rate=1e-4", "data.flip=on",
                                     "sample.prompts=one prompt, with a comma", "text_encoder_lr=null",
                                     "lora.alpha=8"])
    assert (changed.steps, changed.learning_rate, changed.data.flip) == (2000, 1e-4, True)
    assert changed.sample.prompts == ["one prompt, with a comma"]
    assert changed.text_encoder_lr is None and changed.lora.alpha == 8.0
    assert base.steps == 500 and base.data.flip is False


@pytest.mark.parametrize("override, expected", [
    ("stepz=3", "Unknown setting 'stepz'. Did you mean 'steps'?"),
    ("lr=1e-4", "Did you mean 'learning_rate'?"),
    ("resolution=768", "Did you mean 'data.resolution'?"),
    ("lora.rnk=4", "Did you mean 'lora.rank'?"),
    ("class_prompt=dog", "Did you mean 'prior.class_prompt'?"),
    ("steps=many", "steps: 'many' is not a valid int."),
    ("data.resolution=512.5", "data.resolution: 512.5 is not a valid int."),
    ("steps", "must look like name=value"),
])
def test_bad_overrides_name_the_setting(override, expected):
    with pytest.raises(BoothError) as error:
        apply_overrides(TrainConfig(), [override])
    assert expected in str(error.value)


def test_unknown_yaml_key_names_file_and_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: lora\ninstance_prompt: x\nlearning_rat: 1.0e-4\ndata:\n  resolutoin: 512\n")
    with pytest.raises(BoothError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and "'learning_rat'" in message and "Did you mean 'learning_rate'?" in message
    path.write_text("data:\n  resolutoin: 512\n")
    with pytest.raises(BoothError, match=r"'data.resolutoin'. Did you mean 'data.resolution'\?"):
        load_config(path)
    path.write_text("steps: [1, 2\n")
    with pytest.raises(BoothError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(BoothError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("changes, field, hint", [
    ({"steps": 0}, "steps", "at least 1"),
    ({"batch_size": 0}, "batch_size", "at least 1"),
    ({"learning_rate": -1e-4}, "learning_rate", "0 or more"),
    ({"data.resolution": 500}, "data.resolution", "multiple of 8"),
    ({"data.resolution": 0}, "data.resolution", "multiple of 8"),
    ({"lora.rank": 0}, "lora", "rank must be a whole number of at least 1"),
    ({"lora.unet_targets": "[attn]"}, "lora", "unknown name 'attn'"),
    ({"optimizer": "sgd"}, "optimizer", "adamw, adamw8bit, prodigy"),
    ({"mixed_precision": "fp8"}, "mixed_precision", "no, fp16, bf16"),
    ({"method": "textual_inversion"}, "method", "lora, dreambooth_lora, dreambooth"),
    ({"prior.class_prompt": ""}, "prior.class_prompt", "prior.enabled=false"),
    ({"warmup_steps": 600}, "warmup_steps", "fewer steps than the run"),
    ({"device": "tpu"}, "device", "auto, cpu, cuda"),
    ({"sample.scheduler": "pndm"}, "sample.scheduler", "ddim, euler, dpm++"),
    ({"output": "out/model.ckpt"}, "output", "must end in .safetensors"),
])
def test_validate_names_field_and_fix(changes, field, hint):
    config = valid(**changes)
    with pytest.raises(BoothError) as error:
        config.validate()
    line = next(line for line in str(error.value).splitlines() if line.strip().startswith(f"- {field}:"))
    assert hint in line


def test_validate_lists_every_problem_at_once():
    with pytest.raises(BoothError) as error:
        valid(steps=0, batch_size=0, instance_prompt="").validate()
    message = str(error.value)
    assert "- steps:" in message and "- batch_size:" in message and "- instance_prompt:" in message


def test_learning_rate_zero_is_allowed():
    assert valid(learning_rate=0).validate().resolved().learning_rate == 0.0


def test_method_defaults_and_derived_paths():
    lora = valid(method="lora", output_dir="runs/a").resolved()
    assert (lora.learning_rate, lora.text_encoder_lr, lora.prior.enabled) == (1e-4, 1e-4, False)
    assert lora.output == str(Path("runs/a/lora.safetensors")) and lora.cache_dir == str(Path("runs/a/cache"))
    booth = valid(method="dreambooth").resolved()
    assert (booth.learning_rate, booth.prior.enabled) == (2e-6, True)
    dbl = valid(method="dreambooth_lora", text_encoder_lr=5e-5).resolved()
    assert (dbl.learning_rate, dbl.text_encoder_lr, dbl.prior.enabled) == (1e-4, 5e-5, True)
    explicit = valid(method="dreambooth", learning_rate=1e-6, **{"prior.enabled": "false"}).resolved()
    assert (explicit.learning_rate, explicit.prior.enabled) == (1e-6, False)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_load_and_validate(path):
    config = load_config(path).validate().resolved()
    assert config.instance_prompt and config.base.endswith(".safetensors")
    assert config_from_dict(config_to_dict(config)) == config


def test_examples_carry_the_published_recipes():
    by_name = {p.stem: load_config(p) for p in EXAMPLES}
    assert set(by_name) >= {"sd15_lora", "sd15_dreambooth_lora", "sdxl_dreambooth_lora"}
    sdxl = by_name["sdxl_dreambooth_lora"]
    assert (sdxl.data.resolution, sdxl.batch_size, sdxl.gradient_accumulation, sdxl.learning_rate) == (1024, 1, 3, 1e-4)
    assert (sdxl.min_snr_gamma, sdxl.optimizer, sdxl.gradient_checkpointing, sdxl.steps) == (5.0, "adamw8bit", True, 500)
    prior = by_name["sd15_dreambooth_lora"]
    assert prior.prior.enabled and prior.prior.class_prompt == "a photo of dog" and prior.lora.text_encoder
    assert by_name["sd15_lora"].resolved().prior.enabled is False


def test_mirrored_choices_match_their_modules():
    from dataclasses import asdict

    from trainers.config import SAMPLE_SCHEDULERS, LoraConfig
    from trainers.lora.network import LoraSettings
    from trainers.sampling import SCHEDULERS

    assert SAMPLE_SCHEDULERS == SCHEDULERS
    assert asdict(LoraConfig()) == asdict(LoraSettings())
    assert LoraConfig(rank=4, alpha=2.0, unet_targets=("conv",)).settings() == LoraSettings(4, 2.0, ("conv",))
