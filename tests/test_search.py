"""`tinypretrain search`: an Optuna study over a YAML space on a tiny budget; it writes its table, best config and plots,
re-runs the best with seeds, resumes after a kill, and two processes share one study."""

import json
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

import tinypretrain as tp
from tinypretrain.cli import main
from tinypretrain.runs.search import parse_space, search

TINY = ["--builtin_stories", "300", "--max_length", "32", "--vocab_size", "300", "--max_eval_samples", "8",
        "--per_device_train_batch_size", "4", "--model_overrides", '{"hidden_size": 32, "num_hidden_layers": 1, '
        '"num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64}', "--report_to", "none"]
SPACE = {"learning_rate": {"low": 1e-4, "high": 3e-2, "log": True}, "weight_decay": [0.0, 0.1],
         "per_device_train_batch_size": [2, 4]}


def _base(**fields):
    return tp.PretrainConfig(builtin_stories=300, max_length=32, vocab_size=300, max_eval_samples=8,
                             per_device_train_batch_size=4, report_to="none",
                             model_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                              "num_key_value_heads": 1, "intermediate_size": 64}, **fields)


def _study(folder):
    return optuna.load_study(study_name="search", storage=f"sqlite:///{folder / 'study.db'}")


def test_a_search_writes_its_trials_best_config_plots_and_a_seeded_rerun(tmp_path):
    summary = search(_base(), tmp_path, "6", budget_kind="tokens", space=SPACE, trials=4, seeds=2)
    # a 6-token budget is one step: every trial trains, and the table says what each tried
    assert summary["complete"] + sum(t.state.name == "PRUNED" for t in _study(tmp_path).trials) == 4
    trials = (tmp_path / "trials.md").read_text()
    assert trials.count("| complete |") == summary["complete"] and "learning_rate" in trials
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["learning_rate"] == summary["best_params"]["learning_rate"] and best["max_steps"] == 1
    assert best["builtin_stories"] == 300  # the fields every trial shared come along
    header = (tmp_path / "best.yaml").read_text().splitlines()[1]
    assert "learning_rate=search" in header and "max_steps=budget" in header and "builtin_stories=given" in header
    assert (tmp_path / "history.png").stat().st_size > 0 and (tmp_path / "importance.png").stat().st_size > 0
    assert len(summary["rerun_values"]) == 2 and "±" in summary["rerun"]
    for seed, value in zip((3407, 3408), summary["rerun_values"]):  # seed, seed + 1
        record = json.loads((tmp_path / f"best-s{seed}" / "run.json").read_text())
        assert record["config"]["seed"] == seed and record["metrics"]["eval_bits_per_byte"] == value
        assert record["config"]["learning_rate"] == summary["best_params"]["learning_rate"]  # trained at its label
    # a trial's run trained with what the study says it tried
    first = _study(tmp_path).trials[0]
    record = json.loads((tmp_path / "trial-000" / "run.json").read_text())
    assert {k: record["config"][k] for k in first.params} == first.params
    # rerunning the finished search trains nothing new
    again = search(_base(), tmp_path, "6", budget_kind="tokens", space=SPACE, trials=4, seeds=2)
    assert again["trials"] == summary["trials"] and again["rerun_values"] == summary["rerun_values"]


def test_the_space_is_checked_with_one_clear_line(tmp_path, capsys):
    for space, message in [({"learning_rat": [1e-3]}, "did you mean 'learning_rate'"),
                           ({"seed": [1, 2]}, "set by the search itself"),
                           ({"learning_rate": {"low": 1e-2, "high": 1e-3}}, "low < high"),
                           ({"learning_rate": 0.001}, "list of choices or {low, high"),
                           ({}, "empty")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("{", r"\{")):
            parse_space(space)
    path = tmp_path / "space.yaml"
    path.write_text("learning_rate: [1e-3, 3e-3]\nmax_length: {low: 32, high: 64, step: 32}\n")
    dims = parse_space(path)
    assert dims[0].choices == (1e-3, 3e-3) and (dims[1].low, dims[1].high, dims[1].step) == (32, 64, 32)
    code = main(["search", "--budget", "1x", "--output_dir", str(tmp_path / "s"), *TINY])
    assert code == 2 and "1x" in capsys.readouterr().err


def _finished(folder) -> bool:
    try:
        return any(t.state.is_finished() for t in _study(folder).trials)
    except Exception:  # no study yet, or SQLite busy with the writer's transaction: look again
        return False


def _cli(folder, trials, seeds="0"):
    return [sys.executable, "-m", "tinypretrain", "search", "--budget", "40", "--budget_kind", "tokens",
            "--trials", str(trials), "--seeds", seeds, "--output_dir", str(folder), *TINY]


@pytest.mark.slow
def test_a_killed_search_resumes_and_two_processes_share_one_study(tmp_path):
    folder = tmp_path / "s"
    log = tmp_path / "search.err"  # a file, not a pipe: an undrained pipe fills up and stalls the search
    with log.open("w") as err:
        proc = subprocess.Popen(_cli(folder, 6), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 240
    while time.time() < deadline and not _finished(folder) and proc.poll() is None:  # kill it once a trial finished
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _finished(folder), f"no trial finished within 240 s; the search's stderr ends: {log.read_text()[-2000:]}"
    before = len([t for t in _study(folder).trials if t.state.is_finished()])
    assert 1 <= before < 6
    # two processes finish the same study: 6 finished trials in all, no number run twice
    workers = [subprocess.Popen(_cli(folder, 6), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-2000:]
    finished = [t for t in _study(folder).trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 6
    for trial in finished:  # each trial's folder holds the run of what the study says it tried
        record = json.loads((folder / f"trial-{trial.number:03d}" / "run.json").read_text())
        assert {k: record["config"][k] for k in trial.params} == trial.params
    assert (folder / "trials.md").read_text().count("\n| ") >= 6
