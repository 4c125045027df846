"""Data-parallel training on CPU (torchrun, gloo): 2 processes against a single process with the same global batch, and
2 "nodes" joined by c10d rendezvous against 2 processes on one node."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

WORKER = Path(__file__).with_name("ddp_worker.py")
LOSS_TOLERANCE = 1e-4  # per logged step; only the order of float reductions differs


def _run(cmd, tmp_path):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
@pytest.mark.skipif(
    "train_sampling_strategy" not in TrainingArguments.__dataclass_fields__,
    reason="the comparison needs sequential sampling (TrainingArguments.train_sampling_strategy, transformers >= 5.2)",
)
def test_ddp_two_processes_matches_one(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, str(WORKER), str(tmp_path / "ddp"), str(tmp_path / "ddp-log"), "4"], tmp_path)
    _run([sys.executable, str(WORKER), str(tmp_path / "single"), str(tmp_path / "single-log"), "8"], tmp_path)
    rank0, rank1 = (json.loads((tmp_path / "ddp-log" / f"rank{r}.json").read_text()) for r in (0, 1))
    single = json.loads((tmp_path / "single-log" / "rank0.json").read_text())

    # the global batch is what the config says: 2 ranks x 4 rows = the single process's 8 rows
    m = rank0["metrics"]
    assert (m["world_size"], m["global_batch_size"], m["train_steps"]) == (2, 8, 6)
    assert m["tokens_seen"] == 6 * 8 * 32 == single["metrics"]["tokens_seen"]
    # each rank sees different data, and together exactly what the single process saw
    for step in range(6):
        a, b = rank0["seen"][step], rank1["seen"][step]
        assert len(a) == len(b) == 4 and not set(map(tuple, a)) & set(map(tuple, b))
        assert sorted(a + b) == sorted(single["seen"][step])
    # the losses match the single-process run
    ddp, one = _losses(tmp_path / "ddp"), _losses(tmp_path / "single")
    assert ddp.keys() == one.keys() == set(range(1, 7))
    assert max(abs(ddp[s] - one[s]) for s in ddp) < LOSS_TOLERANCE
    # only rank 0 writes the artifacts
    assert rank1["written"] == []
    assert {"run.json", "metrics.jsonl", "samples.md", "loss.png"} <= set(rank0["written"])
    assert (tmp_path / "ddp" / "model.safetensors").exists() and (tmp_path / "ddp" / "checkpoint-6").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nodes(port, args, cwds):
    """2 "nodes" x 1 process on localhost, joined by torchrun's c10d rendezvous as on a cluster."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
             "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
             "--rdzv_id", "tinypretrain-test", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
        for rank, cwd in enumerate(cwds)
    ]


@pytest.mark.slow
@pytest.mark.skipif(
    "train_sampling_strategy" not in TrainingArguments.__dataclass_fields__,
    reason="the comparison needs sequential sampling (TrainingArguments.train_sampling_strategy, transformers >= 5.2)",
)
def test_two_nodes_train_what_two_processes_on_one_node_train(tmp_path):
    """2 "nodes" x 1 process on localhost, joined by torchrun's c10d rendezvous as on a cluster, sharing one run
    folder: the same losses and final weights as 2 processes on one node, and only global rank 0 writes."""
    from safetensors.torch import load_file

    nodes = _nodes(_free_port(), [str(WORKER), str(tmp_path / "nodes"), str(tmp_path / "nodes-log"), "4"],
                   [tmp_path, tmp_path])
    for node in nodes:
        output, _ = node.communicate(timeout=600)
        assert node.returncode == 0, output[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, str(WORKER), str(tmp_path / "one"), str(tmp_path / "one-log"), "4"], tmp_path)

    nodes_loss, one_loss = _losses(tmp_path / "nodes"), _losses(tmp_path / "one")
    assert nodes_loss.keys() == one_loss.keys() == set(range(1, 7))
    assert max(abs(nodes_loss[s] - one_loss[s]) for s in nodes_loss) < 1e-5
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("nodes", "one"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    logs = [json.loads((tmp_path / "nodes-log" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert logs[0]["metrics"]["world_size"] == 2 and logs[1]["written"] == []
    assert {"run.json", "metrics.jsonl"} <= set(logs[0]["written"])



@pytest.mark.slow
def test_a_node_that_cannot_see_the_run_folder_stops_the_run_with_the_fix(tmp_path):
    """The second node starts in another directory, so the relative output_dir names another folder there (as a
    node-local disk would): every rank fails at the start, naming the blind rank and the fix."""
    cwds = [tmp_path / "node0", tmp_path / "node1"]
    for cwd in cwds:
        cwd.mkdir()
    nodes = _nodes(_free_port(), ["-m", "tinypretrain", "train", "--max_steps", "2", "--max_length", "32",
                                  "--vocab_size", "300", "--builtin_stories", "100", "--output_dir", "runs/shared"], cwds)
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert all(node.returncode != 0 for node in nodes), outputs  # torchrun exits 1 when a worker fails
    for output in outputs:
        error = next(line for line in output.splitlines() if line.startswith("tinypretrain: error:"))
        assert "output_dir runs/shared is not shared: rank 1 on " in error and "--save_on_each_node true" in error
        assert "exitcode  : 2" in output  # the worker's own exit (a user's mistake); torchrun itself exits 1
    assert not (cwds[0] / "runs" / "shared").exists()  # the run made the folder, wrote nothing, removed it


FSDP_WORKER = Path(__file__).with_name("fsdp_worker.py")


def test_fsdp_on_cpu_is_refused_rather_than_run_as_ddp():
    import tinypretrain as tp

    with pytest.raises(ValueError, match="fsdp shards the model over GPUs, .* silently train with DDP"):
        tp.PretrainConfig(fsdp="full_shard", use_cpu=True)


@pytest.mark.slow
def test_fsdp2_shards_our_model_trains_as_ddp_resumes_exactly_and_saves_plain_hf_weights(tmp_path):
    """What of FSDP runs on CPU: accelerate (and so Trainer) turns FSDP on only for accelerators, so torch's FSDP2
    (`fully_shard`, each decoder layer its own unit as accelerate wraps them) is driven directly, 2 gloo processes: the
    per-step losses of DDP within 1e-4; a sharded checkpoint (torch.distributed.checkpoint) resumed to bit-identical
    weights; the gathered weights a plain HF model. Trainer's own FSDP path runs in benchmarks/gpu.sh."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                str(FSDP_WORKER)]
    _run([*torchrun, "ddp", "5", str(tmp_path / "ddp")], tmp_path)
    _run([*torchrun, "fsdp", "5", str(tmp_path / "fsdp"), "--save_at", "3"], tmp_path)
    _run([*torchrun, "fsdp", "5", str(tmp_path / "resumed"), "--resume", str(tmp_path / "fsdp" / "checkpoint-3")],
         tmp_path)

    ddp, fsdp, resumed = (json.loads((tmp_path / run / "losses.json").read_text())
                          for run in ("ddp", "fsdp", "resumed"))
    assert ddp.keys() == fsdp.keys() == {"1", "2", "3", "4", "5"}
    assert max(abs(ddp[s] - fsdp[s]) for s in ddp) < LOSS_TOLERANCE
    assert resumed == {s: fsdp[s] for s in ("4", "5")}
    final, again = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("fsdp", "resumed"))
    assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "model")  # no tinypretrain involved
    assert model.model.layers[1].mlp.up_proj.weight.shape == (model.config.intermediate_size, 32)
    assert torch.equal(model.model.embed_tokens.weight, final["model.embed_tokens.weight"])
