"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): a tinypretrain model trained on the same
batches with torch's FSDP2 (``fully_shard`` on each decoder layer, then the root: accelerate's transformer wrap policy
from ``_no_split_modules``) or with DDP. Writes the per-step losses; with ``--save_at N`` saves a sharded checkpoint
(torch.distributed.checkpoint) after step N; with ``--resume DIR`` starts from one; writes the gathered weights as a
plain HF model folder.

    worker.py fsdp|ddp STEPS OUT [--save_at N] [--resume DIR]
"""

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

import tinypretrain as tp

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=["fsdp", "ddp"])
parser.add_argument("steps", type=int)
parser.add_argument("out", type=Path)
parser.add_argument("--save_at", type=int)
parser.add_argument("--resume", type=Path)
args = parser.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
config = tp.make_llama_config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                              vocab_size=300, tie_word_embeddings=True)
model = tp.build_model(config, init="kaiming", seed=0)  # the same weights on every rank
if args.mode == "fsdp":
    layer_class = next(c for c in map(type, model.modules()) if c.__name__ in model._no_split_modules)
    for module in model.modules():
        if isinstance(module, layer_class):
            fully_shard(module)
    fully_shard(model)
    trained = model
else:
    trained = DistributedDataParallel(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
batches = torch.randint(0, 300, (args.steps, world * 4, 32), generator=torch.Generator().manual_seed(1))

first = 0
if args.resume is not None:
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=str(args.resume))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    first = json.loads((args.resume / "step.json").read_text())["step"]

losses = {}
for step in range(first, args.steps):
    rows = batches[step, rank * 4 : (rank + 1) * 4]  # each rank its own rows of the global batch
    loss = trained(input_ids=rows, labels=rows).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    losses[step + 1] = mean.item() / world
    if args.mode == "fsdp" and step + 1 == args.save_at:
        checkpoint = args.out / f"checkpoint-{step + 1}"
        dcp.save({"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)},
                 checkpoint_id=str(checkpoint))
        if rank == 0:
            (checkpoint / "step.json").write_text(json.dumps({"step": step + 1}))

weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
if rank == 0:
    tp.build_model(config).save_pretrained(args.out / "model", state_dict=weights)
    (args.out / "losses.json").write_text(json.dumps(losses))
dist.barrier()
dist.destroy_process_group()
# Leave without interpreter finalization, where gloo's threads can abort a finished process (as `tinypretrain` does).
os._exit(0)
