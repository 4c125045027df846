"""Weight initialisation: the seed's Kaiming-uniform scheme and HF's normal(0, 0.02), both seedable and sticky."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

# Each block's output projections: the attention's and the MLP's, whose outputs join the residual stream (the same
# names in transformers' Llama and Qwen3).
OUTPUT_PROJECTIONS = ("self_attn.o_proj", "mlp.down_proj")


def _reinit(model: nn.Module, init_matrix: Callable[[torch.Tensor], None], seed: int | None) -> nn.Module:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() > 1:
                init_matrix(param)
            elif name.endswith("bias"):
                param.zero_()
    # transformers skips modules and parameters flagged as initialised in `init_weights`/`post_init`,
    # so a later `model.init_weights()` or `from_pretrained(..., config)` cannot silently undo this.
    for module in model.modules():
        module._is_hf_initialized = True
        for param in module.parameters(recurse=False):
            param._is_hf_initialized = True
    return model


def kaiming_init(model: nn.Module, *, seed: int | None = None, gain_nonlinearity: str = "relu") -> nn.Module:
    """The seed's init: Kaiming-uniform (fan_in, gain sqrt(2), bound sqrt(6/fan_in)) on every matrix, embeddings
    and lm_head included, zero biases, norm weights untouched. Deterministic for a given ``seed``.

    Kaiming keeps activations' variance constant through ReLU-like layers; with a 32k vocabulary it makes the
    initial logits large (loss starts far above ln(vocab)). It reproduces the seed, is ``pretrain()``'s default, and
    learned faster than ``normal_init`` in every CPU comparison we ran (benchmarks/RESULTS.md).
    """
    return _reinit(model, lambda w: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity=gain_nonlinearity), seed)


def normal_init(model: nn.Module, *, std: float | None = None, seed: int | None = None) -> nn.Module:
    """HF's LLaMA init: normal(0, std) on every matrix (std defaults to ``config.initializer_range``, 0.02),
    zero biases, norm weights untouched. Deterministic for a given ``seed``.

    Small weights start the loss near ln(vocab) with small logits: the conservative choice if a run diverges
    (the seed's long bf16 run with Kaiming did), though Kaiming learned faster in our runs (benchmarks/RESULTS.md).
    """
    if std is None:
        std = getattr(getattr(model, "config", None), "initializer_range", 0.02)
    return _reinit(model, lambda w: nn.init.normal_(w, mean=0.0, std=std), seed)


InitName = Literal["kaiming", "normal"]
INITS: dict[str, Callable[..., nn.Module]] = {"kaiming": kaiming_init, "normal": normal_init}


def zero_output_projections(model: nn.Module) -> nn.Module:
    """Zero each block's output projections (attention ``o_proj``, MLP ``down_proj``), as the modded-nanogpt
    speedruns do: every block starts as the identity and the residual stream carries the embeddings until training
    writes to it. The gradients into those matrices are not zero, so they learn from the first step."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(OUTPUT_PROJECTIONS):
                module.weight.zero_()
    return model


def init_model(model: nn.Module, init: InitName, *, seed: int | None = None,
               zero_projections: bool = False) -> nn.Module:
    """Apply the init called ``init`` ("kaiming" or "normal"), then with ``zero_projections``
    ``zero_output_projections``."""
    if init not in INITS:
        raise ValueError(f"Unknown init {init!r}; choose one of {sorted(INITS)}.")
    model = INITS[init](model, seed=seed)
    return zero_output_projections(model) if zero_projections else model
