"""Model configuration: the seed's LLaMA shape, named presets and the TinyStories paper grid."""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any

from transformers import LlamaConfig

# Shapes of the TinyStories paper's grid (Eldan & Li 2023, fig. 4/tab. 2): hidden x layers.
PAPER_HIDDEN_SIZES = (64, 128, 256, 512, 768, 1024)
PAPER_LAYERS = (1, 2, 4, 8, 12)
DEFAULT_CONTEXT = 2048  # the seed's max_position_embeddings


def _paper_shape(hidden: int, layers: int) -> dict[str, int]:
    # Head dim 16 up to 16 heads (the seed's 256/16), then wider heads; GQA with 2 queries per KV head.
    heads = min(16, hidden // 16)
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
    }


PRESETS: dict[str, dict[str, Any]] = {
    # The seed recipe's model: 19,532,032 parameters with the 32k Llama-2 vocabulary.
    "seed-20m": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 8},
    # Trains in minutes on 2 CPU cores with a ~4k tokenizer (the built-in corpus default).
    "cpu-2m": {
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 4096,
        "max_position_embeddings": 512,
    },
    **{f"paper-h{h}-l{n}": _paper_shape(h, n) for h in PAPER_HIDDEN_SIZES for n in PAPER_LAYERS},
}


def list_presets() -> list[str]:
    """Names accepted by ``make_llama_config(preset=...)``: the seed model, a CPU-sized model and the
    TinyStories paper grid (``paper-h{hidden}-l{layers}``)."""
    return list(PRESETS)


def ffn_size(hidden_size: int, multiple_of: int = 128) -> int:
    """SwiGLU width: 8/3 x hidden rounded *up* to a multiple of ``multiple_of`` (LLaMA's rule).

    The seed computes ``(int(h*8/3/128)+1)*128``, which adds a whole block when 8/3*h is already a
    multiple (768 -> 2176 instead of 2048); both agree for the seed's 256 -> 768.
    """
    return -(-8 * hidden_size // (3 * multiple_of)) * multiple_of


def _check_positive(sizes: dict[str, Any]) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            hint = f" (a preset? pass preset={value!r})" if isinstance(value, str) and value in PRESETS else ""
            raise ValueError(f"{name} must be a positive integer, got {value!r}{hint}.")


def _check_shape(hidden: int, layers: int, heads: int, kv_heads: int, vocab: int, ffn: int, positions: int) -> None:
    sizes = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "intermediate_size": ffn,
        "max_position_embeddings": positions,
    }
    _check_positive(sizes)
    if hidden % heads:
        divisors = [h for h in range(1, hidden + 1) if hidden % h == 0 and h <= 64]
        raise ValueError(
            f"hidden_size={hidden} is not divisible by num_attention_heads={heads}; "
            f"pick a head count that divides it (e.g. one of {divisors[-4:]}) or change hidden_size."
        )
    if heads % kv_heads:
        options = [k for k in range(1, heads + 1) if heads % k == 0]
        raise ValueError(
            f"num_attention_heads={heads} is not divisible by num_key_value_heads={kv_heads} (GQA needs whole groups); "
            f"use one of {options}."
        )


# The seed's 20M model: what make_llama_config builds for every shape field that neither you nor a preset sets.
SEED_SHAPE: dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": DEFAULT_CONTEXT,
    "tie_word_embeddings": False,
}


def make_llama_config(
    hidden_size: int | None = None,
    num_hidden_layers: int | None = None,
    num_attention_heads: int | None = None,
    num_key_value_heads: int | None = None,
    vocab_size: int | None = None,
    intermediate_size: int | None = None,
    ffn_multiple_of: int = 128,
    max_position_embeddings: int | None = None,
    tie_word_embeddings: bool | None = None,
    *,
    preset: str | None = None,
    **overrides: Any,
) -> LlamaConfig:
    """Build a ``LlamaConfig`` for a tiny GQA/SwiGLU/RoPE/RMSNorm model; unset, it is the seed's 20M model.

    Each shape field is, in order: the value you pass (even one equal to the seed's), the ``preset``'s (see
    ``list_presets()``), the seed's (``SEED_SHAPE``). So ``make_llama_config(preset="cpu-2m", hidden_size=256)`` is
    cpu-2m 256 wide. ``intermediate_size`` left unset is 8/3 x hidden rounded up to ``ffn_multiple_of``.
    ``overrides`` go straight to ``LlamaConfig`` (e.g. ``rope_theta``, ``bos_token_id``).
    Raises ``ValueError`` naming the fix for shapes that cannot work.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}. Choose one of list_presets(): {', '.join(PRESETS)}.")
    given = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": tie_word_embeddings,
    }
    layers = (PRESETS[preset] if preset else {}, SEED_SHAPE)
    args = {name: value if value is not None else next(layer[name] for layer in layers if name in layer)
            for name, value in given.items()}
    if intermediate_size is None:
        _check_positive({"hidden_size": args["hidden_size"], "ffn_multiple_of": ffn_multiple_of})
        intermediate_size = ffn_size(args["hidden_size"], ffn_multiple_of)
    _check_shape(
        args["hidden_size"],
        args["num_hidden_layers"],
        args["num_attention_heads"],
        args["num_key_value_heads"],
        args["vocab_size"],
        intermediate_size,
        args["max_position_embeddings"],
    )
    return LlamaConfig(intermediate_size=intermediate_size, **args, **overrides)


@functools.cache
def _model_fields() -> frozenset[str]:
    llama = LlamaConfig()
    accepted = (*llama.to_dict(), *inspect.signature(LlamaConfig.__init__).parameters, *(llama.rope_parameters or {}))
    return frozenset(accepted) | frozenset(inspect.signature(make_llama_config).parameters)


def unknown_model_fields(overrides: dict[str, Any]) -> list[str]:
    """One problem per key of ``overrides`` that is no model field, with the closest field if one is near."""
    problems = []
    for key in sorted(set(overrides) - _model_fields()):
        close = difflib.get_close_matches(key, sorted(_model_fields()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (see make_llama_config and LlamaConfig)"
        problems.append(f"model_overrides key {key!r} is not a model field{hint}")
    return problems
