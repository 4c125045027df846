"""Never lose a user's files or a run, tested through the CLI in subprocesses the way users hit these cases:
replacing folders, two runs into one folder, a stale lock, and SIGTERM with an exact resume."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tinypretrain.cli import main

TINY = ["--max_length", "32", "--vocab_size", "300", "--builtin_stories", "200", "--max_eval_samples", "4",
        "--eval_size", "4", "--num_samples", "0", "--per_device_train_batch_size", "4",
        "--model_overrides", '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}']


def _cli(args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "tinypretrain", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(predicate, timeout=120):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_overwrite_never_touches_foreign_files(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "stories.txt").write_text("the user's dataset")
    assert main(["train", *TINY, "--max_steps", "1", "--output_dir", str(folder), "--overwrite_output_dir", "true"]) == 2
    assert "did not write (stories.txt)" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["stories.txt"]


def test_tokenizer_train_refuses_foreign_folders_and_files(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"Tom had a red ball number {i}.\n<|endoftext|>\n" for i in range(50)))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.md").write_text("keep")
    (tmp_path / "file").write_text("keep")
    for target in ("notes", "file"):
        assert main(["tokenizer", "train", "--input", str(corpus), "--vocab_size", "300",
                     "--output", str(tmp_path / target)]) == 2
    err = capsys.readouterr().err
    assert "did not write (todo.md)" in err and "is an existing file" in err
    assert (tmp_path / "notes" / "todo.md").read_text() == (tmp_path / "file").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "file", "notes"]  # nothing renamed aside
    for _ in range(2):  # its own tokenizer folder it may replace
        assert main(["tokenizer", "train", "--input", str(corpus), "--vocab_size", "300",
                     "--output", str(tmp_path / "tok")]) == 0


def test_a_run_that_fails_at_once_leaves_no_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kept = tmp_path / "mine"
    kept.mkdir()
    for output_dir in ([], ["--output_dir", "new/run"], ["--output_dir", "mine"]):
        assert main(["train", *TINY, "--max_steps", "2", *output_dir, "--report_to", "no_such_logger"]) == 2
    assert not list((tmp_path / "runs").iterdir()) and not (tmp_path / "new" / "run").exists()
    assert kept.is_dir()  # made by the user, not by the run: stays


@pytest.mark.slow
def test_overwrite_keeps_the_old_run_until_the_new_one_has_its_model(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--max_steps", "2", "--output_dir", str(out)]) == 0
    old_weights = (out / "model.safetensors").read_bytes()
    # a replacement that fails in its first second (an unknown logger) leaves the old run as it was
    assert main(["train", *TINY, "--max_steps", "2", "--output_dir", str(out), "--overwrite_output_dir", "true",
                 "--report_to", "no_such_logger"]) == 2
    assert (out / "model.safetensors").read_bytes() == old_weights and (out / "run.json").exists()
    assert not (out / ".previous-run").exists()
    assert main(["train", *TINY, "--max_steps", "3", "--output_dir", str(out), "--overwrite_output_dir", "true"]) == 0
    assert json.loads((out / "run.json").read_text())["metrics"]["train_steps"] == 3
    assert not (out / ".previous-run").exists() and not (out / ".tinypretrain.lock.owner").exists()


@pytest.mark.slow
def test_one_writer_per_folder_and_a_stale_lock_is_taken_over(tmp_path):
    first = _cli(["train", *TINY, "--max_steps", "100000", "--output_dir", "run", "--save_steps", "5"], tmp_path)
    _wait_for(lambda: list((tmp_path / "run").glob("checkpoint-*/tinypretrain_complete")))
    second = _cli(["train", *TINY, "--max_steps", "2", "--output_dir", "run"], tmp_path)
    assert second.wait(120) == 2
    assert f"in use by another run (PID {first.pid} on " in second.stderr.read()
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert (tmp_path / "run" / ".tinypretrain.lock.owner").exists()  # left behind by the killed run
    resumed = _cli(["train", *TINY, "--max_steps", "12", "--output_dir", "run", "--save_steps", "5",
                    "--resume_from_checkpoint", "true"], tmp_path)
    assert resumed.wait(300) == 0, resumed.stderr.read()[-2000:]  # the kernel released the killed run's flock
    assert not (tmp_path / "run" / ".tinypretrain.lock.owner").exists()


def _contend(barrier, root, trials, results, index):
    from tinypretrain.train import run_dir

    for trial in range(trials):
        barrier.wait()  # both enter the lock at the same instant
        try:
            with run_dir.locked(root / f"t{trial}"):
                entered = time.monotonic()
                time.sleep(0.01)
                results.put((trial, index, "held", entered, time.monotonic()))
        except ValueError as err:
            results.put((trial, index, "refused" if "in use by another run" in str(err) else repr(err), 0, 0))
        except Exception as err:  # a crash in the loser is what this test exists to catch
            results.put((trial, index, repr(err), 0, 0))


def test_the_lock_admits_one_holder_in_simultaneous_races(tmp_path):
    import multiprocessing

    trials, ctx = 60, multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_contend, args=(barrier, tmp_path, trials, results, i)) for i in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * trials)]
    for worker in workers:
        worker.join(30)
    assert {o[2] for o in outcomes} <= {"held", "refused"}, [o for o in outcomes if o[2] not in ("held", "refused")]
    for trial in range(trials):
        held = sorted((o[3], o[4]) for o in outcomes if o[0] == trial and o[2] == "held")
        assert held, f"trial {trial}: nobody held the lock"
        assert all(a[1] <= b[0] for a, b in zip(held, held[1:])), f"trial {trial}: two holders at once"
    contested = sum(1 for t in range(trials) if sum(o[0] == t and o[2] == "refused" for o in outcomes) == 1)
    assert contested >= trials // 2  # most trials were real races, one side refused


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_resume_equals_the_uninterrupted_run(tmp_path, sig):
    # a schedule that does not depend on max_steps, so a run cut at step N and resumed to M equals a run to M
    args = [*TINY, "--save_steps", "100000", "--eval_steps", "100000", "--warmup_steps", "5"]
    run = _cli(["train", *args, "--max_steps", "100000", "--output_dir", "cut", "--report_to", "tensorboard",
                "--logging_dir", "tb"], tmp_path)
    _wait_for(lambda: list((tmp_path / "tb").glob("events.*")))  # the event file appears when training begins
    time.sleep(1)
    run.send_signal(sig)
    assert run.wait(120) == 128 + sig.value
    err = run.stderr.read().strip().splitlines()
    assert err[-1].startswith(f"tinypretrain: stopped by {sig.name} at step ") and "Traceback" not in "\n".join(err)
    assert err[-1].endswith("; resume with --resume_from_checkpoint true")
    step = int(err[-1].split(" at step ")[1].split(";")[0])
    assert step > 0 and (tmp_path / "cut" / f"checkpoint-{step}" / "tinypretrain_complete").exists()
    end = str(step + 5)
    assert main(["train", *args, "--max_steps", end, "--output_dir", str(tmp_path / "cut"),
                 "--resume_from_checkpoint", "true"]) == 0
    assert main(["train", *args, "--max_steps", end, "--output_dir", str(tmp_path / "full")]) == 0
    full, cut = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(full[k], cut[k]) for k in full)
