"""The benchmarks stay usable: every script answers --help on its own, the helpers live in one module, and every
section of RESULTS.md names the command that produced it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
HELPER_MODULES = {"_common.py", "seed_recipe.py"}  # the shared helpers, and the seed's own code ported


def _scripts() -> list[Path]:
    return sorted(p for p in BENCHMARKS.iterdir() if p.suffix in (".py", ".sh") and p.name not in HELPER_MODULES)


@pytest.mark.slow  # starts one Python (torch, transformers) per script
def test_every_benchmark_script_answers_help_on_its_own():
    runs = {}
    for script in _scripts():
        command = [sys.executable] if script.suffix == ".py" else ["bash"]
        runs[script.name] = subprocess.Popen([*command, str(script), "--help"], cwd=BENCHMARKS.parent,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} --help: {err[-500:]}"
        assert len(out.strip().splitlines()) >= 2, f"{name} --help says too little: {out!r}"
        if name.endswith(".py"):
            assert out.startswith("usage: "), name


def test_scripts_share_helpers_instead_of_repeating_them():
    for script in _scripts():
        text = script.read_text(encoding="utf-8")
        assert "def print_table" not in text and "def machine" not in text, f"{script.name}: use _common"
    assert set(HELPER_MODULES) <= {p.name for p in BENCHMARKS.iterdir()}


def test_every_results_section_names_its_script_and_command():
    text = (BENCHMARKS / "RESULTS.md").read_text(encoding="utf-8")
    sections = re.split(r"\n(?=## )", text)[1:]
    assert len(sections) >= 9
    command = re.compile(r"`(?:python (?:benchmarks/)?\w+\.py|bash benchmarks/\w+\.sh|(?:[A-Z_]+=\S+ )+bash "
                         r"benchmarks/\w+\.sh|tinypretrain \w+)[^`]*`")
    for section in sections:
        title = section.splitlines()[0]
        assert command.search(section), f"RESULTS.md {title!r} names no command that produced it"


def test_a_cold_compile_starts_from_an_empty_inductor_cache(monkeypatch, tmp_path):
    """budget.py's compiled runs pay their compile in the budget: each gets an empty cache folder, dropped after, and
    torch's own folder is back (this leans on torch's private ``temporary_cache_dir``)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import budget
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    own = tmp_path / "torch-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(own))
    with budget.inductor_cache("cold"):
        inside = Path(cache_dir())
        assert inside != own and inside.name.startswith("inductor-") and not any(inside.iterdir())
    assert not inside.exists() and Path(cache_dir()) == own
    with budget.inductor_cache("warm"):
        assert Path(cache_dir()) == own


def test_a_timed_run_starts_in_a_fresh_process(monkeypatch):
    """budget.py runs each path in a new interpreter (spawned, not forked), so no run inherits another's state."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import os

    import _common
    import torch  # noqa: F401  (loaded here, so a forked child would have it too)

    assert _common.in_fresh_process(os.getpid) != os.getpid()
    assert _common.in_fresh_process(eval, "'torch' in __import__('sys').modules") is False


def test_memorisation_scores_a_run_on_stories_it_trained_on_and_on_held_out_ones(monkeypatch, tmp_path):
    """A model trained over 40 stories many times knows them better than new ones: the gap is positive."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _common
    import memorisation

    import tinypretrain as tp
    from tinypretrain.data.corpus import generate_stories

    data = tmp_path / "data"
    data.mkdir()
    stories = generate_stories(80, seed=1)
    (data / "train.txt").write_text(_common.eot_text(stories[:40]))
    (data / "validation.txt").write_text(_common.eot_text(stories[40:]))
    run = tp.pretrain(dataset=str(data), output_dir=str(tmp_path / "run"), max_steps=60, max_length=64,
                      vocab_size=300, per_device_train_batch_size=4, num_samples=0, story_samples=0,
                      learning_rate=1e-2, model_overrides={"hidden_size": 64, "num_hidden_layers": 2,
                                                           "num_attention_heads": 2, "num_key_value_heads": 1})
    row = memorisation.score_run(run.output_dir, 40, ["learning_rate"])
    assert row["learning_rate"] == 1e-2 and row["gap"] == row["held_out"] - row["trained_on"] and row["gap"] > 0.05
    summary = memorisation.summarise([row, {**row, "learning_rate": 2e-3, "gap": 0.0}], ["learning_rate"])
    assert [s["n"] for s in summary] == [1, 1] and summary[0]["gap"] == f"{row['gap']:.4f}"


def test_a_time_read_at_the_curves_first_point_is_reported_as_a_bound(monkeypatch):
    """A run that is already past the seed's quality at its first curve point got there at that point or sooner:
    budget.py says '≤' instead of quoting a time (and a time ratio) it never measured."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import budget

    def row(path, seed, bpb, curve):
        return {"budget_s": 300.0, "path": path, "seed": seed, "bits_per_byte": bpb, "curve": curve,
                "seconds_to_seed_epoch": budget.seconds_to(curve, budget.SEED_ONE_EPOCH_BPB)}

    rows = [row(budget.REFERENCE, k, 1.02 + k / 100, [(30.0, 1.5), (60.0, 1.3)]) for k in range(2)]
    rows += [row("defaults", k, 0.93 + k / 100, [(30.0, 1.3), (60.0, 1.1)]) for k in range(2)]
    rows += [row("slow", k, 0.95 + k / 100, [(30.0, 1.45), (60.0, 1.2)]) for k in range(2)]
    summary = {s["path"]: s for s in budget.summarize_paths(rows)}
    assert rows[0]["seconds_to_seed_epoch"] == pytest.approx(30 + 30 * (1.5 - 1.383) / 0.2)
    assert summary["defaults"]["seconds_to_seed_epoch"] == "≤ 30 (2/2)"
    assert summary["defaults"]["time_ratio_to_llama2c"] == f"≤ {round(30 / rows[0]['seconds_to_seed_epoch'], 3)}"
    assert isinstance(summary["slow"]["time_ratio_to_llama2c"], float)
    assert budget.time_ratio([30.0], [30.0], True, True) is None
