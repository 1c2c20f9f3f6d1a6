"""Scores (against torchmetrics), judge-model loading, prompts, the comparison run, its report and sweeps."""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from comfy_checkout import COMFYUI, IS_CHECKOUT, SKIP_REASON, comfy_python
from trainers.errors import BoothError
from trainers.evaluate.config import (CompareConfig, SamplingConfig, SweepConfig, VariantConfig,
                                      apply_compare_overrides, load_compare_config, parse_variant_lines)
from trainers.evaluate.metrics import Judges, clip_t_scores, summarise
from trainers.evaluate.models import find_model, load_clip, load_dino
from trainers.evaluate.prompts import LIVE_SUBJECT_PROMPTS, OBJECT_PROMPTS, default_prompts, strip_identifiers
from trainers.evaluate.test_models import TINY_IMAGE_SIZE, make_test_clip, make_test_dino
from trainers.files import save_tensors

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = TINY_IMAGE_SIZE
HOSTILE = '<script>alert("x")</script>'


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory) -> Path:
    """A models folder as a user would have it: a CLIP HF folder, a DINOv2 HF folder, and an unrelated file."""
    root = tmp_path_factory.mktemp("judges")
    make_test_clip(root / "clip-tiny")
    make_test_dino(root / "dinov2-tiny")
    (root / "notes.txt").write_text("not a model")
    return root


@pytest.fixture(scope="module")
def clip(judge_dir):
    return load_clip(search_dirs=[judge_dir])


@pytest.fixture(scope="module")
def subject_images(tmp_path_factory) -> Path:
    from drawn_images import draw_subject_images

    folder = tmp_path_factory.mktemp("subject")
    draw_subject_images(folder, count=3, size=64)
    return folder


def _random_images(count: int, size: int = IMAGE_SIZE, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, size, size, 3), generator=generator, dtype=torch.uint8)


# ---- prompts ---------------------------------------------------------------------------------------

def test_default_prompts_are_the_dreambooth_lists():
    assert len(OBJECT_PROMPTS) == len(LIVE_SUBJECT_PROMPTS) == 25
    prompts = default_prompts("sks dog", live=True)
    assert prompts[:2] == ["a sks dog in the jungle", "a sks dog in the snow"]
    assert "a sks dog wearing a santa hat" in prompts and "a sks dog on top of a mirror" not in prompts
    assert "a sks teapot floating in an ocean of milk" in default_prompts("sks teapot")
    assert default_prompts("sks dog", count=3)[-1] == "a sks dog on the beach"


@pytest.mark.parametrize("prompt, expected", [
    ("a sks dog in the snow", "a dog in the snow"),
    ("A photo of SKS dog, sitting", "A photo of dog, sitting"),
    ("sks", ""),
    ("a sksdog and asks", "a sksdog and asks"),  # only whole words go
])
def test_identifier_stripping(prompt, expected):
    assert strip_identifiers(prompt, ["sks"]) == expected


def test_identifiers_default_to_the_subject_without_its_class():
    assert CompareConfig(subject="sks dog").identifier_words() == ["sks"]
    assert CompareConfig(subject="dog").identifier_words() == []
    assert CompareConfig(identifiers=["ohwx"]).identifier_words() == ["ohwx"]


# ---- metrics ---------------------------------------------------------------------------------------

class _Transformers4Clip:
    """torchmetrics 1.9 expects get_*_features to return tensors, as transformers 4 did; transformers 5
    returns model outputs. This subclass of the real CLIPModel returns their pooled tensor."""

    @staticmethod
    def load(folder: Path):
        from transformers import CLIPModel

        class Clip(CLIPModel):
            def get_image_features(self, *args, **kwargs):
                return super().get_image_features(*args, **kwargs).pooler_output

            def get_text_features(self, *args, **kwargs):
                return super().get_text_features(*args, **kwargs).pooler_output

        return Clip.from_pretrained(str(folder), local_files_only=True).eval()


def test_clip_t_equals_torchmetrics_clipscore(clip, judge_dir):
    pytest.importorskip("torchmetrics")
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=clip.tokenizer)
    metric = CLIPScore(model_name_or_path=lambda: (_Transformers4Clip.load(judge_dir / "clip-tiny"), processor))
    images = _random_images(4)
    prompts = ["a dog in the snow", "a red cube", "a photo of a cat on the beach, at night", "x"]
    ours = clip_t_scores(clip, images.float() / 255, prompts)
    for image, prompt, score in zip(images, prompts, ours):
        metric.reset()
        metric.update(image.permute(2, 0, 1), prompt)
        assert float(metric.compute()) == pytest.approx(float(score), abs=1e-4)
    assert (ours >= 0).all() and (ours <= 100).all()


def test_clip_t_strips_identifiers_before_scoring(clip):
    images = _random_images(2).float() / 255
    with_identifier = clip_t_scores(clip, images, ["a sks dog in the snow"], identifiers=["sks"])
    plain = clip_t_scores(clip, images, ["a dog in the snow"])
    raw = clip_t_scores(clip, images, ["a sks dog in the snow"])
    assert torch.equal(with_identifier, plain)
    assert not torch.allclose(raw, plain)


def test_clip_t_needs_matching_prompts(clip):
    with pytest.raises(BoothError, match="2 prompts for 3 images"):
        clip_t_scores(clip, _random_images(3).float() / 255, ["a", "b"])


def test_clip_i_and_dino_are_mean_cosine_to_the_references(clip, judge_dir):
    dino = load_dino(search_dirs=[judge_dir])
    assert dino is not None and dino.source.name == "dinov2-tiny"
    images, references = _random_images(2).float() / 255, _random_images(3, seed=5).float() / 255
    judges = Judges.prepare(clip, dino=dino, references=references)
    scores = judges.score(images, ["a dog"])
    image_vectors = torch.nn.functional.normalize(clip.model.get_image_features(
        pixel_values=clip.preprocess(images)).pooler_output, dim=-1)
    reference_vectors = torch.nn.functional.normalize(clip.model.get_image_features(
        pixel_values=clip.preprocess(references)).pooler_output, dim=-1)
    expected = (image_vectors @ reference_vectors.T).mean(1)
    assert scores["clip_i"] == pytest.approx(expected.tolist(), abs=1e-5)
    same = judges.score(references[:1], ["a dog"])
    assert same["dino"][0] > max(scores["dino"])  # an image is most like the set it belongs to
    assert judges.available == ("clip_t", "clip_i", "dino")


def test_summary_is_mean_and_sample_std():
    summary = summarise([1.0, 2.0, 3.0, None, math.nan])
    assert (summary.mean, summary.std, summary.count) == (2.0, 1.0, 3)
    assert summary.text(1) == "2.0 ± 1.0"
    assert summarise([]).text() == "n/a"


# ---- finding and loading judge models --------------------------------------------------------------

def test_clip_from_single_safetensors_with_config(tmp_path, judge_dir, clip):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(judge_dir / "clip-tiny")
    save_tensors(model.state_dict(), tmp_path / "clip_l.safetensors")
    (tmp_path / "clip_l.json").write_text(json.dumps(model.config.to_dict()))
    single = load_clip(tmp_path / "clip_l.safetensors")
    images = _random_images(2).float() / 255
    assert torch.allclose(clip_t_scores(single, images, ["a dog"]), clip_t_scores(clip, images, ["a dog"]), atol=1e-5)


def test_missing_clip_lists_where_it_looked(tmp_path):
    empty = tmp_path / "clip_models"
    empty.mkdir()
    with pytest.raises(BoothError) as error:
        load_clip(search_dirs=[empty, tmp_path / "nowhere"])
    message = str(error.value)
    assert str(empty) in message and f"{tmp_path / 'nowhere'} (does not exist)" in message
    assert "model_type clip" in message and "nothing is downloaded" in message


def test_wrong_model_kind_and_missing_config_are_named(tmp_path, judge_dir):
    with pytest.raises(BoothError, match="'dinov2' model"):
        load_clip(judge_dir / "dinov2-tiny")
    save_tensors({"w": torch.zeros(1)}, tmp_path / "lonely.safetensors")
    with pytest.raises(BoothError, match="needs <name>.json or config.json"):
        find_model("clip", tmp_path / "lonely.safetensors")
    assert load_dino(search_dirs=[tmp_path]) is None
    with pytest.raises(BoothError, match="No dino model found"):
        load_dino(search_dirs=[tmp_path], required=True)


def test_original_dino_as_a_vit_folder_with_its_preprocessor(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(2)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, image_size=24,
                       patch_size=8), add_pooling_layer=False).save_pretrained(tmp_path / "dino-vit")
    (tmp_path / "dino-vit" / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 28}, "crop_size": {"height": 24, "width": 24}, "image_mean": [0.5] * 3,
         "image_std": [0.25] * 3}))
    dino = load_dino(tmp_path / "dino-vit")
    assert type(dino.model).__name__ == "ViTModel"
    assert (dino.preprocess.size, dino.preprocess.crop, dino.preprocess.mean) == (28, (24, 24), (0.5, 0.5, 0.5))
    wide = torch.rand(2, 40, 70, 3)
    pixels = dino.preprocess(wide)
    assert pixels.shape == (2, 3, 24, 24)
    assert dino.embed_images(wide).norm(dim=-1).tolist() == pytest.approx([1.0, 1.0])
    flat = torch.full((1, 28, 28, 3), 0.75)
    assert torch.allclose(dino.preprocess(flat), torch.ones(1, 3, 24, 24))  # (0.75 - 0.5) / 0.25, no resampling


# ---- config ----------------------------------------------------------------------------------------

def test_config_round_trip_overrides_and_typos(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"base": "b.safetensors", "variants": [{"lora": "l.safetensors",
                                                                           "strengths": [0.5, 1]}],
                                    "sampling": {"steps": [5, 10]}}))
    config = load_compare_config(path, ["seeds=[1, 2]", "sampling.guidance_scale=3"])
    assert config.variants[0].strengths == [0.5, 1.0] and config.sampling.steps == [5, 10]
    assert config.seeds == [1, 2] and config.sampling.guidance_scale == 3.0
    path.write_text(yaml.safe_dump({"base": "b", "variants": [{"lora": "l", "strenght": [1]}]}))
    with pytest.raises(BoothError, match="'variants.strenght'.*'variants.strengths'"):
        load_compare_config(path)
    with pytest.raises(BoothError, match="did you mean 'sampling.steps'"):
        apply_compare_overrides(config, ["sampling.stpes=3"])
    with pytest.raises(BoothError, match="sweep.train_config"):
        CompareConfig(base="b", sweep=SweepConfig(train_steps=[1, 2])).validate()


def test_variant_lines_as_typed_in_the_node():
    variants = parse_variant_lines("lora: a.safetensors @ 0.5, 1\n# comment\ncheckpoint: db.safetensors\n"
                                   "checkpoint: db.safetensors + lora: b.safetensors")
    assert [(v.checkpoint, v.lora, v.strengths) for v in variants] == [
        ("", "a.safetensors", [0.5, 1.0]), ("db.safetensors", "", [1.0]), ("db.safetensors", "b.safetensors", [1.0])]
    with pytest.raises(BoothError, match="line 1"):
        parse_variant_lines("lora a.safetensors")


# ---- the comparison end to end ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_lora(tmp_path_factory, tiny_checkpoint, subject_images):
    """A real trained LoRA whose metadata and name carry markup, as a file from anywhere might."""
    from trainers.config import TrainConfig, apply_overrides
    from trainers.files import load_tensors
    from trainers.train import train

    work = tmp_path_factory.mktemp("lora")
    config = apply_overrides(TrainConfig(method="lora", base=str(tiny_checkpoint("sd15")), images=str(subject_images),
                                         instance_prompt="a photo of sks star", output_dir=str(work / "run"),
                                         steps=2, learning_rate=1e-2, device="cpu"), ["data.resolution=64"])
    output = train(config).output
    tensors, meta = load_tensors(output)
    meta["booth.method"] = HOSTILE
    return save_tensors(tensors, work / "evil<b>.safetensors", meta)


def _compare_config(tmp_path, base, judge_dir, subject_images, **changes) -> CompareConfig:
    config = CompareConfig(base=str(base), subject="sks star", prompts=["a {} on the beach", f"a {{}} {HOSTILE}"],
                           seeds=[0, 1], instance_images=str(subject_images), model_dirs=[str(judge_dir)],
                           device="cpu", output_dir=str(tmp_path / "compare"), grid_cell_size=64,
                           sampling=SamplingConfig(steps=[2], height=64, width=64))
    for name, value in changes.items():
        setattr(config, name, value)
    return config


def test_compare_end_to_end_writes_an_escaped_report(tmp_path, tiny_checkpoint, judge_dir, subject_images,
                                                     hostile_lora):
    from trainers.evaluate.compare import run_compare

    config = _compare_config(tmp_path, tiny_checkpoint("sd15"), judge_dir, subject_images,
                             variants=[VariantConfig(lora=str(hostile_lora), strengths=[0.5, 1.0])])
    result = run_compare(config)
    assert [e.label for e in result.entries] == ["base", "evil<b> @ 0.5", "evil<b> @ 1"]
    assert result.metrics == ("clip_t", "clip_i", "dino")
    for entry in result.entries:
        assert all(len(entry.scores[m]) == 4 for m in result.metrics)  # 2 prompts x 2 seeds
        assert all(0 <= v <= 100 for v in entry.scores["clip_t"]) and entry.seconds_per_image > 0
    lora = result.entries[1]
    assert lora.file_bytes == hostile_lora.stat().st_size and lora.training["steps"] == 2.0
    assert lora.training["method"] == HOSTILE
    assert result.entries[0].image_files[0].is_file()

    out = tmp_path / "compare"
    grid = Image.open(out / "grid.png")
    assert grid.height > 3 * 64 and grid.width > 2 * 64
    summary = list(csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
    assert [row["variant"] for row in summary] == ["base", "evil<b> @ 0.5", "evil<b> @ 1"]
    assert float(summary[0]["clip_t_mean"]) == pytest.approx(result.entries[0].summary("clip_t").mean)
    assert summary[1]["training_steps"] == "2.0" and summary[1]["file_bytes"] == str(hostile_lora.stat().st_size)
    rows = list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))
    assert len(rows) == 12 and rows[0]["prompt"] == "a sks star on the beach"
    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert document["variants"][2]["coordinates"] == {"lora_strength": 1.0, "inference_steps": 2}

    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page and "<b>" not in page
    assert html_escaped(HOSTILE) in page and "evil&lt;b&gt;" in page
    assert page.count("data:image/png;base64,") == len(result.plots) + 2  # grid, xy grid (strength), plots
    assert set(result.plots) >= {"clip_t", "clip_i", "dino", "time", "clip_t_vs_lora_strength"}


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_compare_without_references_scores_clip_t_only(tmp_path, tiny_checkpoint, judge_dir):
    from trainers.evaluate.compare import run_compare

    config = _compare_config(tmp_path, tiny_checkpoint("sd15"), judge_dir, None, instance_images="", seeds=[3],
                             prompts=["a {} in the snow"])
    result = run_compare(config)
    assert result.metrics == ("clip_t",) and result.xy_grid is None
    assert list(csv.DictReader((tmp_path / "compare" / "scores.csv").open()))[0].keys() == {
        "variant", "inference_steps", "prompt", "seed", "clip_t", "file"}


def test_sweep_trains_once_per_combination_and_shares_the_cache(tmp_path, tiny_checkpoint, judge_dir,
                                                                 subject_images):
    from trainers.config import TrainConfig, apply_overrides, save_config
    from trainers.evaluate.compare import run_compare, sweep_runs

    train_yaml = tmp_path / "train.yaml"
    save_config(apply_overrides(TrainConfig(method="dreambooth_lora", images=str(subject_images),
                                            instance_prompt="a photo of sks star", device="cpu", seed=0),
                                ["data.resolution=64", "prior.class_prompt=a photo of a star",
                                 "prior.num_class_images=2", "prior.generation_steps=2"]), train_yaml)
    config = _compare_config(tmp_path, tiny_checkpoint("sd15"), judge_dir, subject_images, include_base=False,
                             prompts=["a {}"], seeds=[0],
                             sampling=SamplingConfig(steps=[1, 2], height=64, width=64),
                             sweep=SweepConfig(train_config=str(train_yaml), train_steps=[1, 2],
                                               learning_rates=[1e-3], lora_strengths=[1.0]))
    runs = sweep_runs(config)
    assert [(r.steps, r.learning_rate) for r in runs] == [(1, 1e-3), (2, 1e-3)]
    assert len({r.cache_dir for r in runs}) == 1 and len({r.output for r in runs}) == 2
    result = run_compare(config)
    cache = Path(runs[0].cache_dir)
    assert len(list((cache / "class_images").glob("*/*.png"))) == 2  # made once, reused by the second run
    assert len(list((cache / "latents").glob("*.safetensors"))) == 3 + 2  # 3 subject + 2 class images, once
    assert [(e.coordinates["train_steps"], e.inference_steps) for e in result.entries] == [
        (1, 1), (1, 2), (2, 1), (2, 2)]
    assert {"clip_t_vs_train_steps", "clip_t_vs_inference_steps"} <= set(result.plots)
    xy = Image.open(tmp_path / "compare" / "xy_grid.png")
    assert xy.width > 2 * 64 and xy.height > 2 * 64
    stamps = [Path(r.output).stat().st_mtime_ns for r in runs]
    run_compare(config)  # same settings: the trained files are reused, not retrained
    assert [Path(r.output).stat().st_mtime_ns for r in runs] == stamps


def test_cli_compare_runs_end_to_end(tmp_path, capsys, tiny_checkpoint, judge_dir):
    from trainers.cli import main

    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump({"base": str(tiny_checkpoint("sd15")), "prompts": ["a {} on the beach"],
                                    "model_dirs": [str(judge_dir)], "device": "cpu",
                                    "sampling": {"steps": [1], "height": 64, "width": 64}}))
    assert main(["compare", str(path), "--dry-run", "--set", "seeds=[4]"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["seeds"] == [4]
    assert main(["compare", str(path), "--out-dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^base: clip_t \d+\.\d{3} ± 0\.000  \d+\.\d{3} s/image$", printed, re.MULTILINE)
    assert f"report: {tmp_path / 'out' / 'report.html'}" in printed and (tmp_path / "out" / "report.html").is_file()
    assert main(["compare", str(path), "--set", f"model_dirs=[{tmp_path / 'empty'}]"]) == 2
    assert re.search(r"^error: No clip model found", capsys.readouterr().err)


def test_example_config_loads():
    config = load_compare_config(ROOT / "examples" / "compare.yaml").validate()
    assert config.base and config.variants


# ---- the nodes -------------------------------------------------------------------------------------


def test_clip_score_node_scores_a_batch(pack, judge_dir, clip):
    node = pack.NODE_CLASS_MAPPINGS["BoothCLIPScore"]()
    images = _random_images(2).float() / 255
    output = node.score(images, "a sks dog in the snow\na sks cat\n", "sks", str(judge_dir / "clip-tiny"),
                        reference_images=_random_images(3, seed=9).float() / 255)
    clip_t, clip_i, dino, table, picture = output["result"]
    expected = clip_t_scores(clip, images, ["a dog in the snow", "a cat"])
    assert clip_t == pytest.approx(float(expected.mean()), abs=1e-4)
    assert -1 <= clip_i <= 1 and math.isnan(dino)  # no DINO model named, none in ComfyUI's folders
    lines = table.splitlines()
    assert lines[0].split("\t") == ["#", "prompt", "CLIP-T", "CLIP-I"] and len(lines) == 4
    assert lines[1].split("\t")[1] == "a sks dog in the snow"
    assert picture.ndim == 4 and picture.shape[-1] == 3 and 0 <= float(picture.min()) <= float(picture.max()) <= 1
    with pytest.raises(sys.modules[f"{pack.__name__}.trainers.errors"].BoothError, match="prompts is empty"):
        node.score(images, " \n", "sks", str(judge_dir / "clip-tiny"))


COMPARE_PROBE = r"""
import importlib.util, json, os, sys
comfy_root, pack_dir, root = sys.argv[1:4]
sys.path.insert(0, comfy_root)
os.chdir(comfy_root)
from comfy.cli_args import args
args.cpu = True
import torch, folder_paths
for kind, name in (("checkpoints", "checkpoints"), ("loras", "loras"), ("text_encoders", "clip")):
    folder_paths.add_model_folder_path(kind, os.path.join(root, name), is_default=True)
folder_paths.set_output_directory(os.path.join(root, "output"))
spec = importlib.util.spec_from_file_location("booth_pack", os.path.join(pack_dir, "__init__.py"),
                                              submodule_search_locations=[pack_dir])
pack = importlib.util.module_from_spec(spec)
sys.modules["booth_pack"] = pack
spec.loader.exec_module(pack)
cls = pack.NODE_CLASS_MAPPINGS["BoothCompareModels"]
torch.set_num_threads(1)
with torch.inference_mode():
    out = cls().compare("base.safetensors", "lora: subject.safetensors @ 0.5, 1", True, "sks star", "",
                        "a {} on the beach\na {} in the snow", 0, False, "0", "2", 7.5, "euler", 64, 64, "cmp",
                        unique_id="5")
grid, plots, report, summary = out["result"]
print("RESULT " + json.dumps({"grid": list(grid.shape), "plots": list(plots.shape), "report": report,
                              "summary": summary, "listed": cls.INPUT_TYPES()["required"]["ckpt_name"][0]}))
"""


@pytest.mark.slow
@pytest.mark.comfyui
@pytest.mark.skipif(not IS_CHECKOUT, reason=SKIP_REASON)
def test_compare_node_in_comfyui(tmp_path, tiny_checkpoint, judge_dir, hostile_lora):
    import shutil
    import subprocess

    for folder, source, name in (("checkpoints", tiny_checkpoint("sd15"), "base.safetensors"),
                                 ("loras", hostile_lora, "subject.safetensors")):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / name)
    shutil.copytree(judge_dir / "clip-tiny", tmp_path / "clip" / "clip-tiny")
    run = subprocess.run([comfy_python(), "-c", COMPARE_PROBE, str(COMFYUI), str(ROOT), str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    assert result["listed"] == ["base.safetensors"]
    assert result["grid"][0] == 1 and result["grid"][-1] == 3
    assert result["plots"] == [3, 450, 800, 3]  # CLIP-T, time per image, CLIP-T vs LoRA strength
    assert Path(result["report"]) == tmp_path / "output" / "booth" / "cmp" / "report.html"
    assert Path(result["report"]).is_file()
    assert [line.split(":")[0] for line in result["summary"].splitlines()] == ["base", "subject @ 0.5", "subject @ 1"]
