"""A run's settings, resolved once: the device's values for the fields left at ``None``, where every value came from
(``sources``), and a fingerprint that tells whether two runs trained with the same settings."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from ..utils.cpu import has_bf16_matmul
from ..utils.tables import text_table
from .budget import budget_seconds
from .pretrain import PretrainConfig

# The default step on CUDA: the 64x512 shape of the H200 measurements in benchmarks/RESULTS.md (smaller steps leave
# the GPU waiting on Python); on CPU, 8 blocks per step reached the seed's loss fastest.
CUDA_TOKENS_PER_STEP = 32_768
CPU_BLOCKS_PER_STEP = 8
# A CPU with bf16 matrix instructions (AMX, AVX-512 BF16) trains more in bf16 autocast in a 60-s and a 300-s
# budget, and from 300 s on, compiled (a cold compile of ~20 s, paid inside the budget) more still (benchmarks/
# RESULTS.md sections 26, 29 and 48). Other CPUs keep fp32 (they have no bf16 arithmetic to gain from) and eager
# (compiled fp32 did not pay, section 24).
BF16_CPU_COMPILE_FROM_S = 300.0
# Such a compiled run trains its first minute eagerly, as a 60-s budget does, and compiles after it: it reached the
# seed's quality in 29 s instead of 50 s, with the same bits/byte at the end (section 43: 0.999, p = 0.88).
BF16_CPU_COMPILE_AFTER_S = 60.0
# On CPU a step computes its loss in chunks of 512 tokens with the gradients made in the forward pass, and with bf16
# autocast its attention in fp32: 0.75x the step time of transformers' loss and bf16 attention (benchmarks/RESULTS.md
# section 44). A model compiled before its first step keeps transformers' loss, which inductor fuses in the graph (and
# one compiled mid-run switches to it; train/trainer.py).
CPU_LOSS_CHUNK_TOKENS = 512
CPU_BF16_ATTENTION = "sdpa_fp32"
# Where a run writes, not what it trains: a reproduction picks its own. With how a run is watched, not what it trains,
# they are left out of the settings fingerprint.
NOT_REPRODUCED = ("output_dir", "overwrite_output_dir", "resume_from_checkpoint", "logging_dir", "recipe")
NOT_TRAINING = (*NOT_REPRODUCED, "verbose", "report_to", "run_name", "peak_flops", "num_samples")


def on_bf16_cpu() -> bool:
    """Whether runs here train on a CPU with bf16 matrix instructions (no CUDA): where the bf16 CPU rules apply."""
    return not torch.cuda.is_available() and has_bf16_matmul()


def device_training_args(cfg: PretrainConfig) -> dict[str, Any]:
    """The TrainingArguments a run takes from its device: what each ``None`` field becomes, and how tokens are
    counted and batches copied."""
    cuda = torch.cuda.is_available()
    bf16_cpu = on_bf16_cpu()
    bf16 = cfg.bf16 if cfg.bf16 is not None else (torch.cuda.is_bf16_supported() if cuda else bf16_cpu)
    compile_on_cpu = bf16_cpu and bf16 and (budget_seconds(cfg.max_time) or 0) >= BF16_CPU_COMPILE_FROM_S
    batch = cfg.per_device_train_batch_size
    if batch is None:
        batch = max(CPU_BLOCKS_PER_STEP, CUDA_TOKENS_PER_STEP // cfg.max_length) if cuda else CPU_BLOCKS_PER_STEP
    # A torch_compile_after you give asks for compiling, as a torch_compile_mode does in TrainingArguments.
    asked = cfg.torch_compile_after is not None
    compiled = cfg.torch_compile if cfg.torch_compile is not None else cuda or compile_on_cpu or asked
    after = cfg.torch_compile_after if asked else (BF16_CPU_COMPILE_AFTER_S if compile_on_cpu and compiled else None)
    accelerator_config = {**cfg.accelerator_config.to_dict(), "non_blocking": cuda and cfg.avoid_host_syncs}
    return {
        "per_device_train_batch_size": batch,
        "bf16": bf16,
        "fp16": bool(cfg.fp16 or (cuda and not bf16 and cfg.bf16 is None)),
        "torch_compile": compiled,
        # An epoch's last, smaller batch would recompile the model (benchmarks/RESULTS.md 34-35): compiled runs drop it.
        "dataloader_drop_last": cfg.dataloader_drop_last if cfg.dataloader_drop_last is not None else compiled,
        "accelerator_config": accelerator_config,
        "include_num_input_tokens_seen": "no" if cfg.avoid_host_syncs else "non_padding",
        "torch_compile_after": after,
        "loss_chunk_size": 0 if cuda or (compiled and not after) else CPU_LOSS_CHUNK_TOKENS,
        "attn_implementation": CPU_BF16_ATTENTION if bf16 and not cuda else None,
    }


def resolve_settings(cfg: PretrainConfig) -> PretrainConfig:
    """``cfg`` with the device's value for every field it leaves to the device; ``sources`` names ``"device"`` for
    those. Given fields (except a given ``None``, which means unset), and fields a layer (a recipe, the budget, sft)
    set to a value, keep their values and sources."""
    # A field is the device's to fill when nobody set it: left at its default (given fields are "explicit"), or given
    # as None ("unset").
    left = {name for name, source in cfg.sources.items() if source == "default" or getattr(cfg, name) is None}
    chosen = {name: value for name, value in device_training_args(cfg).items() if name in left}
    resolved = cfg.updated(**chosen)
    resolved.sources = {**cfg.sources, **dict.fromkeys(chosen, "device")}
    return resolved


def settings_table(cfg: PretrainConfig) -> str:
    """One line per field: its name, resolved value and source, aligned (``train --print_config``)."""
    rows = [{"field": name, "value": json.dumps(value, default=str), "source": cfg.sources.get(name, "default")}
            for name, value in cfg.to_fields().items()]
    return text_table(rows, ("field", "value", "source")).rstrip("\n")


def training_settings(cfg: PretrainConfig) -> dict[str, Any]:
    """The resolved fields that decide what a run trains, as JSON values (``run.json``'s record of them reads the
    same)."""
    values = {name: value for name, value in cfg.to_dict().items() if name not in NOT_TRAINING}
    return json.loads(json.dumps(values, default=str))


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of ``training_settings``: equal exactly when every training setting is equal."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def settings_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for each setting that differs, for messages."""
    names = sorted(set(before) | set(after))
    return [f"{n}: {before.get(n)!r} -> {after.get(n)!r}" for n in names if before.get(n) != after.get(n)]
