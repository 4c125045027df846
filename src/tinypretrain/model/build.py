"""Building models from configs and counting their parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, PreTrainedModel

from ..config.llama import DEFAULT_CONTEXT, PRESETS, make_llama_config
from ..config.pretrain import PretrainConfig
from ..config.sft import SFTConfig
from ..data.tokenizer import load_tokenizer
from ..utils.hub import looks_local
from . import attention  # noqa: F401  registers 'sdpa_fp32' with transformers
from .init import OUTPUT_PROJECTIONS, InitName, init_model


def build_model(config: LlamaConfig, *, init: InitName = "normal", seed: int | None = None,
                zero_projections: bool = False) -> PreTrainedModel:
    """A fresh ``LlamaForCausalLM`` (fp32) with the chosen init applied deterministically from ``seed`` (and, with
    ``zero_projections``, each block's output projections at zero)."""
    model = AutoModelForCausalLM.from_config(config)
    return init_model(model, init, seed=seed, zero_projections=zero_projections)


@dataclass(frozen=True)
class ParameterCount:
    """Parameter totals by role and their size in bytes, plus one ``(name, shape, count)`` row per parameter tensor.
    ``body`` is the non-embedding count (neither input embeddings nor lm_head), the one scaling laws use."""

    total: int
    embeddings: int
    lm_head: int
    body: int
    bytes: int
    table: list[tuple[str, tuple[int, ...], int]] = field(repr=False)

    def summary(self) -> str:
        """One line: the total, the non-embedding part, the embeddings and lm_head, and the bytes they take."""
        return (f"{self.total:,} parameters ({self.body:,} non-embedding; embeddings {self.embeddings:,}, lm_head "
                f"{self.lm_head:,}), {self.bytes / 2**20:.1f} MiB")

    def describe(self, verbose: bool) -> str:
        """The summary line, or with ``verbose`` the per-tensor table above it."""
        return str(self) if verbose else self.summary()

    def __str__(self) -> str:
        width = max(len(name) for name, _, _ in self.table)
        rows = [f"{'parameter':<{width}}  {'shape':>14}  {'count':>12}"]
        rows += [f"{name:<{width}}  {str(tuple(shape)):>14}  {n:>12,}" for name, shape, n in self.table]
        rows.append(self.summary())
        return "\n".join(rows)


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count parameters by role: input embeddings, lm_head (0 when tied), and the transformer body.

    Shared (tied) tensors are counted once, so ``total`` and ``bytes`` are what is stored on disk.
    """
    table = []
    embeddings = lm_head = size = 0
    for name, param in model.named_parameters():  # named_parameters already skips tied duplicates
        n = param.numel()
        table.append((name, tuple(param.shape), n))
        size += n * param.element_size()
        if "embed_tokens" in name:
            embeddings += n
        elif name.startswith("lm_head"):
            lm_head += n
    total = sum(n for _, _, n in table)
    return ParameterCount(total, embeddings, lm_head, total - embeddings - lm_head, size, table)


def model_config_for(cfg: PretrainConfig, tokenizer: Any) -> PretrainedConfig:
    """The run's model shape: its preset and overrides, embeddings sized to the tokenizer, the tokenizer's special
    ids, and a context that fits ``max_length``; with ``qk_norm``, as a Qwen3 config (``with_qk_norm``)."""
    shape = {"preset": cfg.preset, **cfg.model_overrides}
    shape.setdefault("vocab_size", -(-len(tokenizer) // 64) * 64)  # embeddings sized to the tokenizer
    # The preset's context (2048 unless it says otherwise), so long stories can be evaluated and generated.
    context = PRESETS[cfg.preset].get("max_position_embeddings", DEFAULT_CONTEXT)
    shape.setdefault("max_position_embeddings", max(cfg.max_length, context))
    config = make_llama_config(
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}; "
            "raise vocab_size in model_overrides (or drop it to match the tokenizer)."
        )
    if cfg.max_length > config.max_position_embeddings:
        raise ValueError(
            f"max_length={cfg.max_length} exceeds max_position_embeddings={config.max_position_embeddings}."
        )
    return with_qk_norm(config) if cfg.qk_norm else config


# The LlamaConfig fields a Qwen3Config shares: Qwen3 is Llama plus an RMSNorm on each head's queries and keys.
_QWEN3_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range",
                 "rms_norm_eps", "tie_word_embeddings", "rope_parameters", "attention_bias", "attention_dropout",
                 "pad_token_id", "bos_token_id", "eos_token_id")


def with_qk_norm(config: LlamaConfig) -> PretrainedConfig:
    """The same shape with QK-norm: transformers' Qwen3 architecture, which is Llama with an RMSNorm over each
    attention head's queries and keys before RoPE, so the model saves and loads as a plain HF model."""
    from transformers import Qwen3Config

    if config.mlp_bias:
        raise ValueError("qk_norm builds a Qwen3 model, which has no MLP biases; drop mlp_bias from model_overrides.")
    return Qwen3Config(**{name: getattr(config, name) for name in _QWEN3_FIELDS}, use_cache=config.use_cache)


def load_model(name_or_path: str | Path) -> tuple[PreTrainedModel, Any]:
    """A trained model and its tokenizer, from a run folder (or any save_pretrained folder) or a hub id: safetensors
    only, never pickles, no remote code; a folder that is not a model is refused with one line saying why."""
    folder = Path(name_or_path).expanduser()
    if folder.exists() or looks_local(str(name_or_path)):
        if not (folder / "config.json").exists():
            raise ValueError(f"{name_or_path} is not a model folder (no config.json); pass a run's output_dir.")
        if not any(folder.glob("*.safetensors")):
            raise ValueError(f"{name_or_path} holds no safetensors weights (tinypretrain never loads pickled "
                             "weights); pass a run's output_dir, or save the model with save_pretrained().")
    tokenizer = load_tokenizer(name_or_path)  # first: it names a folder without a tokenizer before the model loads
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), use_safetensors=True, trust_remote_code=False)
    except SafetensorError as err:
        raise ValueError(f"The weights in {name_or_path} are damaged ({err}); copy the folder again, or use a "
                         "checkpoint-N folder of the run.") from None
    return model, tokenizer


def starting_model(cfg: PretrainConfig, tokenizer: Any) -> PreTrainedModel:
    """The model a run starts from: for sft the base's weights (checked to fit the tokenizer and ``max_length``),
    else a fresh model of the configured shape and init."""
    if not isinstance(cfg, SFTConfig):
        model = build_model(model_config_for(cfg, tokenizer), init=cfg.init, seed=cfg.seed,
                            zero_projections=cfg.zero_init_projections)
        return with_residual_dropout(with_attention(model, cfg.attn_implementation), cfg.residual_dropout)
    model, _ = load_model(cfg.base)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but {cfg.base} has {model.config.vocab_size} "
                         "embeddings; use the base's own tokenizer.")
    if cfg.max_length > model.config.max_position_embeddings:
        raise ValueError(f"max_length={cfg.max_length} exceeds {cfg.base}'s context "
                         f"({model.config.max_position_embeddings} tokens); lower max_length.")
    # fp32 master weights, as pretraining has
    return with_residual_dropout(with_attention(model.float(), cfg.attn_implementation), cfg.residual_dropout)


def with_attention(model: PreTrainedModel, implementation: str | None) -> PreTrainedModel:
    """``model`` computing attention with ``implementation`` ('eager', 'sdpa', 'sdpa_fp32'; None keeps transformers'
    choice)."""
    if implementation is not None:
        model.set_attn_implementation(implementation)
    return model


def with_residual_dropout(model: PreTrainedModel, p: float) -> PreTrainedModel:
    """``model`` with dropout ``p`` on each block's output projections (what the attention and the MLP add to the
    residual stream) while it trains: forward hooks, so the saved model and its config stay plain HF."""
    if p > 0:
        def drop(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            return nn.functional.dropout(output, p, training=module.training)

        for name, module in model.named_modules():
            if name.endswith(OUTPUT_PROJECTIONS):
                module.register_forward_hook(drop)
    return model
