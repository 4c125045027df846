"""The CLI as users run it, in subprocesses: under torchrun with two CPU processes, with TensorBoard, and the line
between a user's mistake (one line) and a bug (traceback and versions)."""

import json
import subprocess
import sys

import pytest

SMALL = ["--max_steps", "4", "--max_length", "32", "--vocab_size", "300", "--builtin_stories", "200",
         "--max_eval_samples", "8", "--eval_size", "8", "--num_samples", "1", "--per_device_train_batch_size", "2",
         "--model_overrides", '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}']
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _cli(args, cwd, launcher=(sys.executable,)):
    return subprocess.run([*launcher, "-m", "tinypretrain", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("with_output_dir", [True, False])
def test_torchrun_cli_writes_one_complete_run_folder(tmp_path, with_output_dir):
    args = ["train", *SMALL] + (["--output_dir", "runs/mine"] if with_output_dir else [])
    proc = _cli(args, tmp_path, TORCHRUN)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1, folders  # rank 0 named it, every rank used it
    for name in ("model.safetensors", "tokenizer.json", "run.json", "metrics.jsonl", "loss.png", "samples.md"):
        assert (folders[0] / name).exists(), name
    assert json.loads((folders[0] / "run.json").read_text())["metrics"]["world_size"] == 2
    assert proc.stdout.count("Model and tokenizer saved to") == 1  # only rank 0 reports


CONSOLE = """
import atexit, sys
import torch.distributed as dist
if sys.argv[1] == "group":
    dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=0, world_size=1)
atexit.register(lambda: print("finalized", flush=True))
sys.argv = ["tinypretrain", "generate", sys.argv[3]]
from tinypretrain.cli import console
console()
"""


@pytest.mark.parametrize("group", [True, False])
def test_the_command_keeps_its_exit_code_and_skips_finalization_only_in_a_process_group(tmp_path, group):
    """In a process group, `tinypretrain` leaves without interpreter finalization (where gloo can abort a finished
    process), with main()'s exit code and its output flushed; alone it exits as any script does."""
    proc = subprocess.run([sys.executable, "-c", CONSOLE, "group" if group else "alone", str(tmp_path / "store"),
                           str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]  # a run folder that does not exist: a usage error
    assert "tinypretrain: error:" in proc.stderr
    assert ("finalized" in proc.stdout) is not group


@pytest.mark.slow
def test_under_torchrun_pretrain_returns_on_every_rank_once_the_run_folder_is_complete(tmp_path):
    """Rank 0 alone writes the samples, run.json and card after training; no rank returns before it has (and no rank
    exits while another still works)."""
    script = tmp_path / "every_rank.py"
    script.write_text(
        "import os\n"
        "import tinypretrain as tp\n"
        "result = tp.pretrain(output_dir='run', max_steps=2, max_length=32, vocab_size=300, builtin_stories=200,\n"
        "    max_eval_samples=8, eval_size=8, num_samples=8, per_device_train_batch_size=2,\n"
        "    model_overrides={'hidden_size': 32, 'num_hidden_layers': 1, 'num_attention_heads': 2,\n"
        "                     'num_key_value_heads': 1})\n"
        "names = ('samples.md', 'run.json', 'README.md')\n"
        "print(f\"rank {os.environ['RANK']} returned to a complete folder: \"\n"
        "      f\"{all((result.output_dir / name).exists() for name in names)}\")\n"
    )
    proc = subprocess.run([*TORCHRUN, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank} returned to a complete folder: True" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.slow
def test_every_trainer_option_from_the_cli_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = _cli(["train", *SMALL, "--output_dir", "out", "--report_to", "tensorboard", "--logging_dir", "tb",
                 "--logging_steps", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert len(events.Scalars("train/loss")) == 4
    assert events.Scalars("eval/bits_per_byte")


def test_a_bug_shows_its_traceback_and_versions(tmp_path, monkeypatch, capsys):
    import tinypretrain.cli as cli

    def broken(cfg):
        raise KeyError("internal")

    monkeypatch.setattr(cli.training, "pretrain", broken)
    assert cli.main(["train", "--output_dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'internal'" in err
    assert "this looks like a bug" in err and '"transformers": "5.' in err


def test_a_mistake_is_one_line(tmp_path, capsys):
    import tinypretrain.cli as cli

    assert cli.main(["train", "--learning_rate", "-1", "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinypretrain: error: Invalid PretrainConfig: learning_rate must be >= 0")
    assert "Traceback" not in err
