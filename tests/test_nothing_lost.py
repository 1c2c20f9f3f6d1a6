"""Nothing lost: a run never destroys an input, replaces a file it was not asked to, writes an
untrained result over a real one, trains for nothing because it cannot save, or silently races
another run. Real tiny checkpoints, real image folders, the real command line and real processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from file_systems import read_only_folder, tmpfs
from trainers.cli import main
from trainers.config import TrainConfig, apply_overrides
from trainers.errors import BoothError
from trainers.files import load_tensors
from trainers.progress import Progress
from trainers.train import train
from trainers.train.state import load_state

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a photo of sks star"

pytestmark = pytest.mark.usefixtures("one_thread", "keep_signal_handlers")



@pytest.fixture
def images(noise_images) -> Path:
    return noise_images


def config(tmp_path: Path, base: Path, *overrides: str) -> TrainConfig:
    made = TrainConfig(method="lora", base=str(base), images=str(tmp_path / "images"), instance_prompt=PROMPT,
                       output_dir=str(tmp_path / "run"), steps=1, batch_size=2, learning_rate=1e-3,
                       mixed_precision="no", save_dtype="fp32")
    return apply_overrides(made, ["data.resolution=64", "lora.rank=4", *overrides])


def cli(base: Path, images: Path, out_dir: Path, *extra: str) -> list[str]:
    return ["train", "--method", "lora", "--base", str(base), "--images", str(images), "--instance-prompt", PROMPT,
            "--steps", "1", "--resolution", "64", "--rank", "4", "--output-dir", str(out_dir),
            "--set", "batch_size=2", "--set", "mixed_precision=no", *extra]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


# ---- 1. the output is never an input -----------------------------------------------------------------

@pytest.mark.parametrize("through", ["same path", "symlink", "hard link"])
def test_output_equal_to_the_base_is_refused_and_the_base_kept(through, tmp_path, images, tiny_checkpoint, capsys):
    base = tmp_path / "base.safetensors"
    base.write_bytes(tiny_checkpoint("sd15").read_bytes())
    before = base.read_bytes()
    out = {"same path": base, "symlink": tmp_path / "link.safetensors", "hard link": tmp_path / "hard.safetensors"}
    if through == "symlink":
        out[through].symlink_to(base)
    elif through == "hard link":
        os.link(base, out[through])
    code, err = run_cli(cli(base, images, tmp_path / "run", "--out", str(out[through]), "--overwrite"), capsys)
    assert code == 2 and f"is one of the inputs (the base checkpoint {base})" in err, err
    assert base.read_bytes() == before


# ---- 2. never replace a file with a result of zero steps --------------------------------------------

class StopAtOnce(Progress):
    """What Ctrl-C during latent encoding, or Cancel pressed early in ComfyUI, looks like to the loop."""

    def should_stop(self) -> bool:
        return True


class StopAfterOneStep(Progress):
    """Ctrl-C or Cancel during the first step."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        self.steps = step

    def should_stop(self) -> bool:
        return self.steps >= 1


def test_stop_before_the_first_step_keeps_the_existing_output(tmp_path, images, tiny_checkpoint):
    run = config(tmp_path, tiny_checkpoint("sd15"))
    first = train(run)
    kept = Path(first.output).read_bytes()
    result = train(run, StopAtOnce(), overwrite=True)
    assert result.stopped and result.output is None and result.steps == 0
    assert Path(first.output).read_bytes() == kept
    assert load_tensors(first.output)[1]["booth.steps"] == "1"
    assert not (tmp_path / "run" / "state.pt").exists()


def test_stop_before_the_first_step_writes_nothing_new(tmp_path, images, tiny_checkpoint):
    run = config(tmp_path, tiny_checkpoint("sd15"))
    result = train(run, StopAtOnce())
    assert result.output is None
    assert not Path(run.resolved().output).exists() and not (tmp_path / "run" / "state.pt").exists()


# ---- 3. a run that cannot save is refused before it loads; a failed save keeps the weights ----------

def test_output_naming_a_folder_is_refused_before_loading(tmp_path, images, capsys):
    folder = tmp_path / "loras.safetensors"
    folder.mkdir()
    code, err = run_cli(cli(tmp_path / "missing.safetensors", images, tmp_path / "run", "--out", str(folder)), capsys)
    assert code == 2 and f"Output {folder} is a folder; give a file name" in err, err  # before the missing base


@pytest.mark.parametrize("setting", ["--output-dir", "cache_dir", "prior.class_images", "--out"])
def test_folder_that_is_a_file_is_named_before_loading(setting, tmp_path, images, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    target = blocker / ("x.safetensors" if setting == "--out" else "sub")
    extra = {"--output-dir": ["--output-dir", str(target)], "--out": ["--out", str(target)],
             "cache_dir": ["--set", f"cache_dir={target}"],
             "prior.class_images": ["--class-prompt", "a star", "--class-images", str(target)]}[setting]
    code, err = run_cli(cli(tmp_path / "missing.safetensors", images, tmp_path / "run") + extra, capsys)
    assert code == 2 and f"{blocker} is a file. Choose a folder path." in err, err


def test_read_only_output_folder_is_refused_before_loading(tmp_path, images, capsys):
    """A read-only folder (a read-only file system as root, mode 555 otherwise) is named before the
    missing base is even looked at, and nothing is written into it."""
    folder = tmp_path / "read only"
    with read_only_folder(folder) as reason:
        code, err = run_cli(cli(tmp_path / "missing.safetensors", images, tmp_path / "run",
                                "--out", str(folder / "x.safetensors")), capsys)
        assert code == 2 and f"Cannot write to {folder} (the folder of output x.safetensors): {reason}." in err, err
        assert list(folder.iterdir()) == []


class BreakOutputFolderAtEnd(Progress):
    """After the last step, the output's folder is replaced by a file (a disk unmounted, a folder
    deleted): the final save fails for real."""

    def __init__(self, folder: Path, steps: int) -> None:
        self.folder, self.steps = folder, steps

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        if step == self.steps:
            for child in self.folder.iterdir():
                child.unlink()
            self.folder.rmdir()
            self.folder.write_text("in the way")


def test_failed_final_save_keeps_the_trained_weights_and_says_where(tmp_path, images, tiny_checkpoint, capsys):
    out_folder = tmp_path / "loras"
    run = config(tmp_path, tiny_checkpoint("sd15"), "steps=2", f"output={out_folder / 'mine.safetensors'}")
    with pytest.raises(BoothError) as error:
        train(run, BreakOutputFolderAtEnd(out_folder, 2))
    state = tmp_path / "run" / "state.pt"
    message = str(error.value)
    assert message.startswith(f"Could not write {out_folder / 'mine.safetensors'} (")
    assert f"The 2 trained steps are kept in {state}" in message and "with --resume to save them" in message
    assert load_state(state)["step"] == 2
    out_folder.unlink()  # the user fixes it, resumes, and gets the result without training again
    code = main(cli(tiny_checkpoint("sd15"), images, tmp_path / "run", "--out", str(out_folder / "mine.safetensors"),
                    "--steps", "2", "--learning-rate", "1e-3", "--set", "save_dtype=fp32", "--resume"))
    assert code == 0 and "(0 in this run)" in capsys.readouterr().out
    assert load_tensors(out_folder / "mine.safetensors")[1]["booth.steps"] == "2"


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 KiB file system (tmpfs), filled to 8 KiB free; skipped where it cannot be mounted."""
    with tmpfs(tmp_path / "small disk", "size=64k") as mount:
        (mount / "fill").write_bytes(bytes(56 * 1024))
        yield mount


def test_full_disk_at_the_final_save_keeps_the_weights(tmp_path, images, tiny_checkpoint, small_disk, capsys):
    """Room to start (the check writes a byte) but not for the LoRA: safetensors' own write error
    becomes the rescue, not a stack trace; after freeing space, --resume saves without training."""
    out = small_disk / "mine.safetensors"
    args = cli(tiny_checkpoint("sd15"), images, tmp_path / "run", "--out", str(out), "--steps", "2")
    code, err = run_cli(args, capsys)
    assert code == 2 and f"error: Could not write {out} (No space left on device). The 2 trained steps are kept " \
                         f"in {tmp_path / 'run' / 'state.pt'}" in err, err
    assert [p.name for p in small_disk.iterdir()] == ["fill"]
    (small_disk / "fill").unlink()
    assert main(args + ["--resume"]) == 0 and "(0 in this run)" in capsys.readouterr().out
    assert load_tensors(out)[1]["booth.steps"] == "2"


def test_a_full_disk_is_named_before_loading(tmp_path, images, small_disk, capsys):
    (small_disk / "more").write_bytes(bytes(8 * 1024))  # not a byte left
    code, err = run_cli(cli(tmp_path / "not loaded.safetensors", images, tmp_path / "run",
                            "--out", str(small_disk / "mine.safetensors")), capsys)
    assert code == 2 and f"Cannot write to {small_disk} (the folder of output mine.safetensors): No space left " \
                         "on device." in err, err


# ---- 4. the command line replaces an existing LoRA only when asked ----------------------------------

def test_cli_refuses_an_existing_output_without_overwrite(tmp_path, images, tiny_checkpoint, capsys):
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"my earlier LoRA")
    args = cli(tiny_checkpoint("sd15"), images, tmp_path / "run", "--out", str(out))
    code, err = run_cli(args, capsys)
    assert code == 2 and f"Output {out} already exists" in err and "--overwrite" in err, err
    assert out.read_bytes() == b"my earlier LoRA"
    assert main(args + ["--overwrite"]) == 0
    assert load_tensors(out)[1]["booth.steps"] == "1"


# ---- 5. two runs on one output: the second is refused ------------------------------------------------

def test_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path, images, tiny_checkpoint, capsys):
    from test_reliability import cli_command, start_and_wait_for_steps

    base, out = tiny_checkpoint("sd15"), tmp_path / "run"
    first, _ = start_and_wait_for_steps(cli_command(base, images, out, tmp_path / "cache", 10_000), 1)
    try:
        code, err = run_cli(cli(base, images, out, "--overwrite"), capsys)
        assert code == 2 and "is in use by another training run (process " in err, err
        assert f"(process {first.pid})" in err
    finally:
        first.kill()  # a lock dies with its process, even with kill -9
        first.communicate(timeout=60)
    assert main(cli(base, images, out, "--overwrite")) == 0
    assert list(tmp_path.rglob("*booth-lock*")) == []  # the killed run's lock files were taken over and removed


# ---- 6. a resume continues only on the model and images it was trained on ---------------------------

@pytest.mark.parametrize("change, named", [
    ("base", "the base model is not the one it was trained from"),
    ("image", "the training images or captions differ (encoded pictures then: 2 instance; now: 2 instance)"),
    ("caption", "the training images or captions differ"),
])
def test_resume_on_other_inputs_is_refused_naming_what_changed(change, named, tmp_path, images, tiny_checkpoint):
    from trainers.checkpoint.test_models import make_test_checkpoint

    base = tmp_path / "base.safetensors"
    base.write_bytes(tiny_checkpoint("sd15").read_bytes())
    run = config(tmp_path, base, "steps=3")
    assert train(run, StopAfterOneStep()).steps == 1
    if change == "base":  # another model under the same name
        make_test_checkpoint("sd15", base, variant="tiny", seed=7)
    elif change == "image":
        Image.new("RGB", (64, 64), (200, 0, 0)).save(images / "1.png")
    else:
        (images / "1.txt").write_text("a photo of something else")
    with pytest.raises(BoothError) as error:
        train(run, resume=True)
    message = str(error.value)
    assert message.startswith(f"Cannot resume from {tmp_path / 'run' / 'state.pt'}: ") and named in message
    assert message.endswith("Resume with the inputs it was trained on, or start a new run in another output_dir.")
    assert load_state(tmp_path / "run" / "state.pt")["step"] == 1


def test_resume_on_the_same_inputs_continues(tmp_path, images, tiny_checkpoint):
    run = config(tmp_path, tiny_checkpoint("sd15"), "steps=2")
    train(run, StopAfterOneStep())
    assert train(run, resume=True).steps == 2


# ---- 7. a run that cannot be resumed does not leave a "resumable" state -------------------------------

def test_node_runs_keep_no_state_they_cannot_resume(tmp_path, images, tiny_checkpoint):
    """The ComfyUI nodes train with resumable=False (nodes/train.py): Cancel keeps the LoRA of the
    steps done, but writes no state.pt that nothing could resume."""
    run = config(tmp_path, tiny_checkpoint("sd15"), "steps=5")
    result = train(run, StopAfterOneStep(), resumable=False)
    assert result.stopped and result.steps == 1 and result.state is None
    assert load_tensors(result.output)[1]["booth.steps"] == "1"
    assert not (tmp_path / "run" / "state.pt").exists()
    source = (ROOT / "nodes" / "train.py").read_text(encoding="utf-8")
    assert "resumable=False" in source


# ---- 8. Booth's own pictures never become training images ---------------------------------------------

def test_work_folder_beside_the_images_is_fine(tmp_path, images, tiny_checkpoint):
    """A subfolder that the scan does not read (not named 'N_caption') may hold Booth's outputs."""
    assert train(config(tmp_path, tiny_checkpoint("sd15"), f"output_dir={images / 'run'}")).steps == 1


@pytest.mark.parametrize("setting", ["--output-dir", "cache_dir", "prior.class_images"])
def test_work_folders_inside_the_images_are_refused(setting, tmp_path, images, tiny_checkpoint, capsys):
    inside = {"--output-dir": images, "cache_dir": images / "3_cache", "prior.class_images": images}[setting]
    extra = {"--output-dir": [], "cache_dir": ["--set", f"cache_dir={inside}"],
             "prior.class_images": ["--class-prompt", "a star", "--class-images", str(inside)]}[setting]
    out_dir = inside if setting == "--output-dir" else tmp_path / "run"
    code, err = run_cli(cli(tiny_checkpoint("sd15"), images, out_dir, *extra), capsys)
    assert code == 2 and f"{setting.lstrip('-').replace('-', '_')} {inside} is read as part of the instance images folder" in err
    assert sorted(p.name for p in images.iterdir()) == ["0.png", "1.png"]
