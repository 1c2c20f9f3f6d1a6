"""The seeds' study, reproduced on the toy world: LoRA, DreamBooth and DreamBooth-LoRA trained on the same
subject and measured side by side, with and without prior preservation, plus sweeps of training steps,
learning rate and text-encoder steps.

Each training runs in its own process (``python -m trainers train``), so its time and peak memory are its
own and the run is exactly what a user's command line would do. All runs share one class-image folder.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..config import dump_config, save_config
from ..errors import BoothError
from ..files import atomic_write_text
from ..formatting import format_size
from ..progress import Progress
from . import DEMO_STEPS, TOY_CHECKPOINT
from .subject import INSTANCE_PROMPT, write_instance_images

STEPS = DEMO_STEPS


@dataclass(frozen=True)
class StudyRun:
    """One training of the study; ``group`` says which table or sweep it belongs to."""

    name: str
    method: str
    group: str
    prior: bool = True
    steps: int = STEPS
    learning_rate: float | None = None  # None: the study's per-method rate
    text_encoder_steps: int = 0  # full DreamBooth only: text encoder trained for the first N steps


# Learning rates for the toy model: its weights are ~100x fewer than SD's, so the rates are higher than a
# real checkpoint's defaults (1e-4 LoRA, 2e-6 DreamBooth); the sweep shows where each method breaks.
TOY_LEARNING_RATES = {"lora": 3e-3, "dreambooth_lora": 3e-3, "dreambooth": 1e-4}


def study_runs() -> list[StudyRun]:
    methods = [StudyRun("lora", "lora", "methods", prior=False),
               StudyRun("dreambooth", "dreambooth", "methods"),
               StudyRun("dreambooth_no_prior", "dreambooth", "methods", prior=False),
               StudyRun("dreambooth_lora", "dreambooth_lora", "methods"),
               StudyRun("dreambooth_lora_no_prior", "dreambooth_lora", "methods", prior=False)]
    steps = [StudyRun(f"dreambooth_lora_{n}_steps", "dreambooth_lora", "train_steps", steps=n) for n in (100, 200)]
    rates = [StudyRun(f"dreambooth_lora_lr_{lr:g}", "dreambooth_lora", "learning_rate", learning_rate=lr)
             for lr in (1e-3, 1e-2)]
    text = [StudyRun(f"dreambooth_text_encoder_{n}", "dreambooth", "text_encoder_steps", text_encoder_steps=n)
            for n in (50, STEPS)]  # frozen is the methods table's dreambooth run
    return methods + steps + rates + text


def run_config(run: StudyRun, root: Path, images: Path):
    from ..demo import demo_config

    config = demo_config(root / "runs" / run.name, TOY_CHECKPOINT, images, run.steps)
    config.method = run.method
    config.learning_rate = run.learning_rate or TOY_LEARNING_RATES[run.method]
    config.prior.enabled = run.prior
    config.prior.class_images = str(root / "class_images")
    config.sample.every = 0
    config.save_every = 0
    config.dreambooth.train_text_encoder_steps = run.text_encoder_steps
    config.output = str(root / "models" / f"{run.name}.safetensors")
    return config


def _config_file(config, root: Path) -> Path:
    return root / "configs" / f"{Path(config.output).stem}.yaml"


def trained_with(config, root: Path) -> bool:
    """Whether the run's model file exists and was trained with exactly these settings (a study rerun
    after the recipe changed must retrain, not report the old models under the new settings)."""
    file = _config_file(config, root)
    return Path(config.output).is_file() and file.is_file() and file.read_text(encoding="utf-8") == dump_config(config)


def _train_in_process(config, root: Path, progress: Progress) -> Path:
    """``python -m trainers train`` on a saved YAML; the output file carries time and peak memory."""
    yaml_file = save_config(config, _config_file(config, root))
    done = subprocess.run([sys.executable, "-m", "trainers", "train", str(yaml_file), "--log-every", "0",
                           "--overwrite"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BoothError(f"Study run {yaml_file} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    progress.on_message(done.stdout.strip().splitlines()[-1])
    return Path(config.output)


def run_study(out_dir: str | Path = "outputs/study", progress: Progress | None = None,
              runs: list[StudyRun] | None = None) -> dict:
    """Train every run, score it against the base model, write the table, plots and report; return the rows."""
    from ..checkpoint.loader import load_components
    from ..evaluate.compare import training_figures
    from ..lora import apply_lora, read_lora
    from .scoring import class_embeddings, toy_judges

    progress = progress or Progress()
    root = Path(out_dir)
    images = write_instance_images(root / "images")[0].parent
    judges = toy_judges(images)
    base = load_components(TOY_CHECKPOINT)
    base_class = class_embeddings(base, judges)
    rows = [_row("base model", "base", "", base, judges, base_class, TOY_CHECKPOINT, {})]
    runs = runs or study_runs()
    for index, run in enumerate(runs, start=1):
        if progress.should_stop():
            raise BoothError(f"Study stopped after {index - 1} runs.")
        progress.on_message(f"[{index}/{len(runs)}] {run.name}")
        config = run_config(run, root, images)
        output = Path(config.output)
        if not trained_with(config, root):
            _train_in_process(config, root, progress)
        if run.method == "dreambooth":
            model = load_components(output)
        else:
            model = load_components(TOY_CHECKPOINT)
            apply_lora(model, read_lora(output))
        rows.append(_row(run.name, run.group, run.method, model, judges, base_class, output, training_figures(output),
                         run=replace(run, learning_rate=config.learning_rate)))
    write_study(root, rows)
    report = compare_methods(root, [row for row in rows[1:] if row["group"] == "methods"], images, progress)
    return {"rows": rows, "table": str(root / "study.md"), "report": report}


def compare_methods(root: Path, rows: list[dict], images: Path, progress: Progress) -> str:
    """The methods side by side through ``compare``: image grid, plots and report.html (compare/)."""
    from ..evaluate.compare import run_compare
    from ..evaluate.config import VariantConfig, dump_compare_config
    from .scoring import subject_comparison

    variants = [VariantConfig(name=row["name"], **({"checkpoint": str(root / "models" / f"{row['name']}.safetensors")}
                                                  if row["method"] == "dreambooth" else
                                                  {"lora": str(root / "models" / f"{row['name']}.safetensors")}))
                for row in rows]
    config = subject_comparison(variants, images, root / "compare")
    atomic_write_text(root / "compare.yaml", dump_compare_config(config))
    return str(run_compare(config, progress).files["report"])


def _row(name: str, group: str, method: str, model, judges, base_class, file: Path, figures: dict,
         run: StudyRun | None = None) -> dict:
    from .scoring import score

    return {"name": name, "group": group, "method": method, **(asdict(run) if run else {}),
            **asdict(score(model, judges, base_class)), "training_seconds": figures.get("seconds"),
            "peak_memory_bytes": figures.get("peak_memory_bytes"), "file_bytes": file.stat().st_size}


_COLUMNS = (("name", "run"), ("clip_i", "CLIP-I ↑"), ("clip_t", "CLIP-T ↑"), ("class_drift", "class drift ↓"),
            ("class_diversity", "class diversity"), ("training_seconds", "training s"),
            ("peak_memory_bytes", "peak memory"), ("file_bytes", "file size"), ("seconds_per_image", "s / image"))


def _cell(key: str, value) -> str:
    if value is None:
        return "—"
    if key in ("peak_memory_bytes", "file_bytes"):
        return format_size(int(value))
    if isinstance(value, float):
        digits = 1 if key in ("clip_t", "training_seconds") else 3
        return f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.000" for a rounding-size negative
    return str(value)


def write_study(root: Path, rows: list[dict]) -> None:
    """study.md (one table per group), study.csv, study.json and a plot per sweep."""
    from ..plots import line_plot

    lines = [f"# Toy-world study\n\nSubject: '{INSTANCE_PROMPT}'. Scores by the toy CLIP judge; class drift and "
             "diversity from 12 pictures of 'a photo of a heart' (same seeds as the base model's).\n"]
    base = rows[0]
    for group in dict.fromkeys(row["group"] for row in rows[1:]):
        members = [base] + [row for row in rows if row["group"] == group]
        lines.append(f"\n## {group.replace('_', ' ')}\n\n| " + " | ".join(label for _, label in _COLUMNS) + " |\n|"
                     + "---|" * len(_COLUMNS))
        lines += ["| " + " | ".join(_cell(key, row.get(key)) for key, _ in _COLUMNS) + " |" for row in members]
        axis = {"train_steps": "steps", "learning_rate": "learning_rate", "text_encoder_steps": "text_encoder_steps"}
        if group in axis:
            swept = sorted((row for row in rows[1:] if row.get("method") == members[1]["method"]
                            and (row["group"] == group or row["name"] == members[1]["method"])),
                           key=lambda row: row[axis[group]])
            xs = [row[axis[group]] for row in swept]
            line_plot({metric: (xs, [row[metric] for row in swept]) for metric in ("clip_i", "class_drift")},
                      root / f"{group}.png", title=f"{members[1]['method']}: scores vs {group.replace('_', ' ')}",
                      xlabel=group.replace("_", " "), ylabel="score")
            lines.append(f"\n![{group}]({group}.png)")
    atomic_write_text(root / "study.md", "\n".join(lines) + "\n")
    atomic_write_text(root / "study.json", json.dumps(rows, indent=1))
    keys = list(dict.fromkeys(key for row in rows for key in row))
    with open(root / "study.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
