"""Run by tests/test_distributed.py, under torchrun or alone: a tiny pretrain() that records, per rank, which
training rows it saw and which artifacts it wrote."""

import json
import os
import sys
from pathlib import Path

import torch

import tinypretrain.train.records as artifacts
import tinypretrain.train.run as train
import tinypretrain.train.trainer as trainer

out, log_dir, micro_batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rank = int(os.environ.get("RANK", "0"))
log_dir.mkdir(parents=True, exist_ok=True)
seen, written = [], []

make_collator = trainer.causal_collator


def recording_collator(*args, **kwargs):
    collate = make_collator(*args, **kwargs)

    def wrapped(features):
        seen.append([list(map(int, f["input_ids"][:8])) for f in features])
        return collate(features)

    return wrapped


def recording(fn):
    def wrapped(path, *args, **kwargs):
        written.append(Path(path).name)
        return fn(path, *args, **kwargs)

    return wrapped


trainer.causal_collator = recording_collator
artifacts.atomic_write_text = recording(artifacts.atomic_write_text)
artifacts.atomic_write_json = recording(artifacts.atomic_write_json)
artifacts.plot_losses = (lambda plot: lambda history, path: (written.append(path.name), plot(history, path)))(
    artifacts.plot_losses
)

result = train.pretrain(
    output_dir=str(out), max_steps=6, builtin_stories=400, max_eval_samples=16, eval_size=16, vocab_size=300,
    max_length=32, per_device_train_batch_size=micro_batch, logging_steps=1, eval_steps=3, save_steps=3,
    num_samples=1, model_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                    "num_key_value_heads": 1},
    train_sampling_strategy="sequential",  # comparable batches across world sizes
)
(log_dir / f"rank{rank}.json").write_text(json.dumps({"seen": seen, "written": written, "metrics": result.metrics}))
if torch.distributed.is_initialized():  # under torchrun
    torch.distributed.destroy_process_group()
# Leave without interpreter finalization, where gloo's threads can abort a finished process (as `tinypretrain` does).
os._exit(0)
