"""Every case of the generated hostile-input corpus (tests/hostile_corpus.py) through the real
command line: exit status 2, one ``error:`` line with the expected words, no stack trace, no file
written or changed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from file_systems import run_cli_bound_by_file_modes
from hostile_corpus import Case, build, make_lora
from trainers.cli import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread", "keep_signal_handlers")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("hostile")
    base = tiny_checkpoint("sd15")
    lora = make_lora(base, folder / "lora.safetensors")
    return {case.name: case for case in build(folder / "corpus", base, lora, tiny_checkpoint("sd2"))}


def _names() -> list[str]:
    """The case names, read without building the corpus (parametrisation happens at collection)."""
    import ast

    tree = ast.parse((Path(__file__).with_name("hostile_corpus.py")).read_text(encoding="utf-8"))
    return [node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Case"
            and isinstance(node.args[0], ast.Constant)]



@pytest.mark.parametrize("name", _names())
def test_hostile_input_gets_one_clear_line(name, corpus, capsys):
    if name not in corpus:
        pytest.skip("needs non-UTF-8 file names (POSIX)")
    case = corpus[name]
    before = {path: path.read_bytes() for path in case.untouched}
    code, err = run_case(case, capsys)
    assert code == case.code, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for piece in case.expect:
        assert piece in err, err
    assert {path: path.read_bytes() for path in case.untouched} == before
    assert not (Path(case.argv[-1]).name == "out.safetensors" and Path(case.argv[-1]).exists())


def run_case(case: Case, capsys) -> tuple[int, str]:
    """(exit status, stderr) of a case through the real command line: in this process, or, for a
    mode-000 file, in a process that file modes bind (as root, without root's overrides)."""
    if not case.permissions:
        return main(case.argv), capsys.readouterr().err
    if os.name != "posix":
        pytest.skip("file modes make no file unreadable off POSIX")
    done = run_cli_bound_by_file_modes(case.argv)
    return done.returncode, done.stderr


def test_every_case_is_run(corpus):
    """The names parametrised at collection are exactly the corpus's cases, each once."""
    assert len(_names()) == len(set(_names())) and set(corpus) <= set(_names())
    assert len(set(_names()) - set(corpus)) <= 1  # the non-UTF-8 folder case off POSIX


def test_inspect_into_a_closed_pipe_ends_quietly(tiny_checkpoint):
    """``inspect … | head -1``: the reader leaves early; no BrokenPipeError stack trace."""
    command = f"{sys.executable} -m trainers inspect {tiny_checkpoint('sd15')} | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.stdout.strip() == str(tiny_checkpoint("sd15"))
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode in (0, 141)


def test_a_full_work_folder_after_the_save_still_reports_done(tmp_path, tiny_checkpoint, capsys):
    """The loss log cannot be written (its name is taken by a folder): the LoRA is saved, so the
    run succeeds and says what it could not write."""
    from hostile_corpus import PROMPT, _images

    images = _images(tmp_path / "images")
    (tmp_path / "run" / "losses.csv").mkdir(parents=True)
    code = main(["train", "--method", "lora", "--base", str(tiny_checkpoint("sd15")), "--images", str(images),
                 "--instance-prompt", PROMPT, "--steps", "1", "--resolution", "64", "--rank", "4",
                 "--output-dir", str(tmp_path / "run"), "--set", "mixed_precision=no"])
    out = capsys.readouterr().out
    assert code == 0 and "done: 1 steps" in out, out
    assert "warning: could not write the loss log" in out
    assert (tmp_path / "run" / "lora.safetensors").is_file()


def test_node_output_name_over_255_bytes_is_a_widget_message(pack, tmp_path):
    """The nodes' name cleaning refuses a name the file system would reject, naming the widget."""
    bridge = sys.modules["booth_pack_under_test.nodes.comfy_bridge"]
    with pytest.raises(bridge.BoothError, match=r"lora_name: the name x+\.\.\. is 260 bytes long; at most 241 fit"):
        bridge.safe_output_path(tmp_path, "x" * 248, ".safetensors", True, "lora_name")
    assert list(tmp_path.iterdir()) == []


def test_an_uppercase_txt_caption_is_read(tmp_path):
    from hostile_corpus import _images
    from trainers.data import scan_image_folder

    images = _images(tmp_path / "images")
    (images / "0.TXT").write_text("a photo of sks star on grass")
    items = scan_image_folder(images, instance_prompt="a photo of sks star").items
    assert [item.caption for item in items] == ["a photo of sks star on grass", "a photo of sks star"]


def test_a_run_clears_the_temporaries_of_its_killed_saves(tmp_path, tiny_checkpoint, capsys):
    """Hidden temporaries a kill -9 left beside the output and in the work folder go at the next
    start (the run's lock proves no one is writing them); the shared cache's are left alone."""
    from hostile_corpus import PROMPT, _images

    images, run, cache = _images(tmp_path / "images"), tmp_path / "run", tmp_path / "cache"
    stale = [run / ".lora.safetensors.k1ll3d00.tmp", run / ".state.pt.abcdefgh.tmp",
             run / "snapshots" / ".lora-step000002.safetensors.x.tmp"]
    kept = cache / "latents" / ".0123.safetensors.zzzzzzzz.tmp"
    for path in (*stale, kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    code = main(["train", "--method", "lora", "--base", str(tiny_checkpoint("sd15")), "--images", str(images),
                 "--instance-prompt", PROMPT, "--steps", "1", "--resolution", "64", "--rank", "4",
                 "--output-dir", str(run), "--set", "mixed_precision=no", "--set", f"cache_dir={cache}"])
    assert code == 0 and "removed 3 temporary file(s) left by an interrupted save" in capsys.readouterr().out
    assert not any(path.exists() for path in stale) and kept.exists()


def test_ctrl_c_during_loading_or_encoding_writes_nothing(tmp_path, tiny_checkpoint):
    """A real SIGINT to a real CLI run the moment it starts loading: the stop is honoured before the
    first step, and an existing output (replaced only by a trained result) keeps its bytes."""
    from hostile_corpus import PROMPT, _images

    images, out = _images(tmp_path / "images"), tmp_path / "mine.safetensors"
    out.write_bytes(b"my earlier LoRA")
    command = [sys.executable, "-m", "trainers", "train", "--method", "lora", "--base", str(tiny_checkpoint("sd15")),
               "--images", str(images), "--instance-prompt", PROMPT, "--steps", "5", "--resolution", "64",
               "--rank", "4", "--output-dir", str(tmp_path / "run"), "--out", str(out), "--overwrite",
               "--set", "mixed_precision=no"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    lines = [process.stdout.readline()]
    assert lines[0].startswith("loading "), lines
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    output = "".join(lines) + rest
    assert process.returncode == 0 and "Traceback" not in output, output
    assert "stopped while encoding the instance images" in output and "nothing saved; " in output
    assert "stopped before the first step: nothing was written" in output
    assert out.read_bytes() == b"my earlier LoRA"
    assert not (tmp_path / "run" / "state.pt").exists()
