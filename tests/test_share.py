"""Sharing finished runs: the model card, story metrics in the run record, compare and push (to a local stand-in for
the hub, which this machine cannot reach)."""

import csv
import io
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import tinypretrain as tp
from tinypretrain.cli import main
from tinypretrain.config.argv import train_config
from tinypretrain.model.evaluate import STORY_METRICS
from tinypretrain.runs.compare import COLUMNS, compare
from tinypretrain.runs.push import PUSHED_FILES, push_run
from tinypretrain.train.card import INDEXED_METRICS, is_unedited_card, model_card
from tinypretrain.utils.tables import csv_table, markdown_table

TINY = dict(
    builtin_stories=300,
    max_length=64,
    vocab_size=300,
    per_device_train_batch_size=4,
    story_samples=4,
    story_max_new_tokens=24,
    eval_steps=3,
    save_steps=6,
    max_eval_samples=40,
    model_overrides={
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 64,
    },
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("share")
    return [
        tp.pretrain(output_dir=str(root / name), max_steps=steps, **TINY).output_dir
        for name, steps in (("short", 6), ("long", 9))
    ]


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_card_parses_and_its_model_index_equals_run_json(runs):
    run = runs[0]
    record = json.loads((run / "run.json").read_text())
    card = ModelCard.load(run / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.license == "apache-2.0"
    indexed = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert indexed == {metric: record["metrics"][key] for key, (metric, _) in INDEXED_METRICS.items()}
    for heading in (
        "## Story quality",
        "## Samples",
        "## Model",
        "## Tokenizer",
        "## Data",
        "## Training",
        "## Use it without tinypretrain",
        "## Reproduce",
        "## Limitations",
    ):
        assert heading in card.text
    assert record["run"]["command"] in card.text and "![Loss curves](loss.png)" in card.text
    assert f"`{record['run']['data']['fingerprint']}`" in card.text


def test_run_record_and_metrics_log_carry_the_story_metrics(runs):
    record = json.loads((runs[0] / "run.json").read_text())
    evals = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    required = {f"eval_{m}" for m in STORY_METRICS if m != "name_consistency"}  # that one needs a named character
    assert required <= set(record["metrics"]) and len(evals) == 2
    assert all(required <= set(e) and "num_input_tokens_seen" in e for e in evals)
    assert 0 <= record["metrics"]["eval_eos_rate"] <= 1
    assert record["metrics"]["eval_eos_rate"] == evals[-1]["eval_eos_rate"]


def test_the_cards_loading_snippet_runs_without_tinypretrain(runs):
    snippet = model_card(runs[0]).text.split("```python\n")[1].split("```")[0]
    blocker = "import sys; sys.modules['tinypretrain'] = None\n"  # importing tinypretrain would now fail
    result = subprocess.run([sys.executable, "-c", blocker + snippet], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()


def test_the_cards_reproduce_command_rebuilds_the_config(runs):
    record = json.loads((runs[0] / "run.json").read_text())
    argv = shlex.split(record["run"]["command"])
    assert argv[:2] == ["tinypretrain", "train"]
    rebuilt = train_config(argv[2:]).to_fields()
    original = tp.PretrainConfig(max_steps=6, **TINY).to_fields()
    assert {k: v for k, v in rebuilt.items() if k != "output_dir"} == {
        k: v for k, v in original.items() if k != "output_dir"
    }


def test_card_command_rewrites_the_card_and_refuses_a_non_run(runs, tmp_path, capsys):
    run = runs[1]
    (run / "README.md").unlink()
    assert _cli(capsys, "card", run)[0] == 0 and (run / "README.md").exists()
    code, _, err = _cli(capsys, "card", tmp_path)
    assert code == 2 and "no run.json" in err and len(err.strip().splitlines()) == 2


def test_an_edited_or_foreign_card_is_never_replaced_unasked(runs, tmp_path, capsys, local_hub):
    run = Path(shutil.copytree(runs[0], tmp_path / "run"))
    card = run / "README.md"
    assert is_unedited_card(card)
    card.write_text(card.read_text() + "\nMy own notes on this model.\n")
    edited = card.read_text()
    code, _, err = _cli(capsys, "card", run)
    assert code == 2 and "was edited" in err and card.read_text() == edited
    push_run(run, "me/edited", api=local_hub)  # pushed as the user left it
    assert (tmp_path / "hub" / "me" / "edited" / "README.md").read_text() == card.read_text() == edited
    card.write_text("# A card I wrote myself\n")
    assert _cli(capsys, "card", run)[0] == 2 and card.read_text() == "# A card I wrote myself\n"
    assert _cli(capsys, "card", run, "--force")[0] == 0 and is_unedited_card(card)
    assert ModelCard.load(card).data.eval_results


def test_compare_tables_and_plot(runs, tmp_path):
    rows = compare(runs, plot=tmp_path / "cmp.png")
    assert [r["train_steps"] for r in rows] == [6, 9]
    assert set(rows[0]) == set(COLUMNS) and rows[1]["tokens_seen"] > rows[0]["tokens_seen"]
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    parsed = list(csv.DictReader(io.StringIO(csv_table(rows, COLUMNS))))
    assert [float(r["eval_bits_per_byte"]) for r in parsed] == [r["eval_bits_per_byte"] for r in rows]
    table = markdown_table(rows, COLUMNS).splitlines()
    assert len(table) == 4 and table[0].startswith("| run | preset")


def test_compare_cli_prints_csv_and_never_replaces_a_foreign_file(runs, tmp_path, capsys, monkeypatch):
    code, out, err = _cli(capsys, "compare", *runs, "--csv", "--plot", tmp_path / "c.png")
    assert code == 0, err
    assert len(list(csv.DictReader(io.StringIO(out)))) == 2 and (tmp_path / "c.png").exists()
    monkeypatch.chdir(tmp_path)  # markdown; a plot only when asked, and ours to replace
    code, out, _ = _cli(capsys, "compare", *runs)
    assert code == 0 and "| run |" in out and list(tmp_path.iterdir()) == [tmp_path / "c.png"]
    for _ in range(2):
        code, out, _ = _cli(capsys, "compare", *runs, "--plot", "compare.png")
        assert code == 0 and "Plot of eval bits/byte against tokens and seconds: compare.png" in out
    assert (tmp_path / "compare.png").exists()
    (tmp_path / "mine.png").write_bytes(b"\x89PNG user's own picture")
    code, _, err = _cli(capsys, "compare", *runs, "--plot", tmp_path / "mine.png")
    assert code == 2 and "not a figure tinypretrain wrote" in err
    assert (tmp_path / "mine.png").read_bytes() == b"\x89PNG user's own picture"
    card = tmp_path / "card.png"  # names tinypretrain, but is not a figure it wrote
    card.write_bytes((Path(runs[0]) / "README.md").read_bytes())
    code, _, err = _cli(capsys, "compare", *runs, "--plot", card)
    assert code == 2 and "not a figure tinypretrain wrote" in err
    assert card.read_bytes() == (Path(runs[0]) / "README.md").read_bytes()


def test_compare_names_a_damaged_log_and_a_plot_path_that_is_not_a_png(runs, tmp_path, capsys):
    damaged = Path(shutil.copytree(runs[1], tmp_path / "damaged"))
    with open(damaged / "metrics.jsonl", "a") as log:
        log.write('{"step": 9, "eval_bits')
    for run, message in ((damaged, "metrics.jsonl line"), (tmp_path, "no run.json")):
        code, _, err = _cli(capsys, "compare", runs[0], run, "--plot", tmp_path / "c.png")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 2
    (damaged / "metrics.jsonl").unlink()
    code, _, err = _cli(capsys, "compare", runs[0], damaged, "--plot", tmp_path / "c.png")
    assert code == 2 and "metrics.jsonl is missing" in err
    for plot in (tmp_path / "c.jpg", tmp_path):
        code, _, err = _cli(capsys, "compare", *runs, "--plot", plot)
        assert code == 2 and "ending in .png" in err
    assert not (tmp_path / "c.jpg").exists() and not (tmp_path / "c.png").exists()


def test_push_uploads_the_model_not_the_checkpoints(runs, local_hub):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    url = push_run(runs[0], "me/tiny", api=local_hub)
    repo = local_hub.root / "me" / "tiny"
    pushed = {str(p.relative_to(repo)) for p in repo.rglob("*")}
    assert url == "local://me/tiny"
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json", "run.json", "loss.png"} <= pushed
    assert not any(name.startswith("checkpoint") or name.startswith(".") for name in pushed)
    assert "model_id = 'me/tiny'" in (repo / "README.md").read_text()
    AutoModelForCausalLM.from_pretrained(repo) and AutoTokenizer.from_pretrained(repo)
    assert set(PUSHED_FILES) >= {"README.md", "run.json", "loss.png"}


def test_push_fails_fast_with_one_line_offline_or_logged_out(runs, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    code, _, err = _cli(capsys, "push", runs[0], "--repo_id", "me/tiny")
    assert code == 2 and "Not logged in" in err
    # A hub that cannot be reached (a closed local port) must be reported at once, not after retries.
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")
    code, _, err = _cli(capsys, "push", runs[0], "--repo_id", "me/tiny")
    assert code == 2 and "cannot be reached" in err and len(err.strip().splitlines()) == 2  # error + --debug hint
    code, _, err = _cli(capsys, "push", tmp_path, "--repo_id", "me/tiny")
    assert code == 2 and "no final model" in err
    code, _, err = _cli(capsys, "push", runs[0], "--repo_id", "me/tiny stories")  # checked before anything else
    assert code == 2 and "--repo_id: Repo id must use alphanumeric chars" in err


def test_one_table_writer_shows_the_same_rows_as_markdown_csv_and_text():
    from tinypretrain.utils.tables import cell, text_table

    rows = [{"run": "a", "tokens": 1234567, "bpb": 1.23456, "note": None}, {"run": "bb", "tokens": 5, "bpb": 12345.6}]
    columns = ("run", "tokens", "bpb", "note")
    assert [cell(v) for v in (None, 1234567, 1.23456, 12345.6, True, "x")] == ["", "1,234,567", "1.235", "12,346",
                                                                              "True", "x"]
    assert markdown_table(rows, columns).splitlines()[2] == "| a | 1,234,567 | 1.235 |  |"
    assert list(csv.DictReader(io.StringIO(csv_table(rows, columns))))[1] == {"run": "bb", "tokens": "5",
                                                                             "bpb": "12345.6", "note": ""}
    text = text_table(rows, columns).splitlines()
    assert text == ["run     tokens     bpb  note", "a    1,234,567   1.235", "bb           5  12,346"]
