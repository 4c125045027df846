"""Comparisons that say how sure they are: mean ± 95% CI (Student t) and Welch's p, by compare --group_by and the
sweep; and the defects of the records they read."""

import json
import math

import pytest
from scipy import stats

from tinypretrain.cli import main
from tinypretrain.runs.compare import group_runs
from tinypretrain.utils.stats import format_mean_ci, format_p, mean_ci, welch_p


def _run(folder, lr, seed, bpb, loss, tokenizer=("byte-level BPE", 4096)):
    """A minimal finished-run record, as compare reads it."""
    folder.mkdir(parents=True)
    record = {"format": 1, "config": {"learning_rate": lr, "seed": seed, "model_config": {"hidden_size": 128}},
              "metrics": {"eval_bits_per_byte": bpb, "eval_loss": loss}, "compute": {},
              "run": {"tokenizer": {"origin": tokenizer[0], "vocab_size": tokenizer[1]}}}
    (folder / "run.json").write_text(json.dumps(record))
    (folder / "metrics.jsonl").write_text("")
    return folder


def test_mean_ci_and_welch_agree_with_the_textbook():
    values = [1.20, 1.25, 1.22, 1.28]
    mean, half = mean_ci(values)
    sd = stats.tstd(values)
    assert mean == pytest.approx(1.2375) and half == pytest.approx(stats.t.ppf(0.975, 3) * sd / 2)
    assert mean_ci([1.0]) == (1.0, None) and welch_p([1.0], [2.0, 3.0]) is None
    a, b = [1.0, 1.1, 1.2], [1.3, 1.5, 1.4]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert format_mean_ci([1.0, 1.2]).startswith("1.1000 ± ") and format_p(0.0312) == "p=0.031"
    assert format_p(1e-5) == "p<0.001" and format_p(None) == ""


def test_group_by_gives_n_mean_ci_and_p_against_the_first_group(tmp_path, capsys):
    runs = [_run(tmp_path / f"a{i}", 2e-3, i, bpb, bpb * 2.5) for i, bpb in enumerate((1.30, 1.32, 1.31))]
    runs += [_run(tmp_path / f"b{i}", 4e-3, i, bpb, bpb * 2.5) for i, bpb in enumerate((1.25, 1.26, 1.24))]
    rows, warnings = group_runs([*runs, runs[0]], ["learning_rate"])  # a run named twice counts once
    assert [r["n"] for r in rows] == [3, 3] and warnings == []
    assert rows[0]["eval_bits_per_byte_mean"] == pytest.approx(1.31)
    assert rows[1]["eval_bits_per_byte_p"] == pytest.approx(welch_p([1.25, 1.26, 1.24], [1.30, 1.32, 1.31]))
    assert rows[0]["eval_bits_per_byte_p"] is None and rows[1]["eval_bits_per_byte p"].startswith("p=")
    assert main(["compare", *map(str, runs), "--group_by", "learning_rate"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| learning_rate | n | eval_bits_per_byte | eval_bits_per_byte p |")
    assert "| 0.004 | 3 | 1.2500 ± " in out[3] and "p=" in out[3]
    assert main(["compare", *map(str, runs), "--group_by", "learning_rate", "--csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("learning_rate,n,eval_bits_per_byte_mean,eval_bits_per_byte_ci95,eval_bits_per_byte_p")


def test_group_by_model_fields_and_a_warning_for_different_tokenizers(tmp_path, capsys):
    a = _run(tmp_path / "a", 2e-3, 0, 1.3, 3.0, ("byte-level BPE", 4096))
    b = _run(tmp_path / "b", 2e-3, 1, 1.2, 4.0, ("NousResearch/Llama-2-7b-hf", 32000))
    assert main(["compare", str(a), str(b), "--group_by", "hidden_size"]) == 0
    captured = capsys.readouterr()
    assert "| 128 | 2 | 1.2500 ± " in captured.out
    assert "different tokenizers, so eval_loss does not compare" in captured.err and "32,000 tokens" in captured.err
    assert main(["compare", str(a), "--group_by", "no_such_field"]) == 2
    assert "records no setting 'no_such_field'" in capsys.readouterr().err


def test_a_record_without_config_is_one_line(tmp_path, capsys):
    folder = _run(tmp_path / "old", 2e-3, 0, 1.3, 3.0)
    record = json.loads((folder / "run.json").read_text())
    del record["config"]
    (folder / "run.json").write_text(json.dumps(record))
    assert main(["compare", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "has no 'config' section" in err and "Traceback" not in err and len(err.strip().splitlines()) == 2


def test_a_record_of_another_version_is_one_clear_message(tmp_path, capsys):
    folder = _run(tmp_path / "old", 2e-3, 0, 1.3, 3.0)
    record = json.loads((folder / "run.json").read_text())
    del record["format"]  # as every tinypretrain before record formats wrote it
    record["versions"] = {"tinypretrain": "0.1.0"}
    (folder / "run.json").write_text(json.dumps(record))
    for command in (["compare", str(folder)], ["card", str(folder)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "was written by tinypretrain 0.1.0, in a record format this version" in err and "Traceback" not in err


def test_nan_free_ci_for_identical_values():
    mean, half = mean_ci([1.0, 1.0, 1.0])
    assert mean == 1.0 and half == 0.0 and not math.isnan(half)
