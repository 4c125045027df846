"""GGUF export for llama.cpp, Ollama and LM Studio: architecture ``llama``, written with the ``gguf`` package (the
llama.cpp project's own writer), tokenizer inside."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..version import __version__

WRITER_KEY = "tinypretrain.version"  # marks a file tinypretrain wrote, which a later export may replace
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def check_llama(config: PretrainedConfig) -> None:
    """Refuse, naming the field, a model that llama.cpp's ``llama`` architecture cannot represent."""
    rope = getattr(config, "rope_parameters", None) or {}
    problems = {
        "model_type": (config.model_type, "llama"),
        "hidden_act": (config.hidden_act, "silu"),
        "attention_bias": (getattr(config, "attention_bias", False), False),
        "mlp_bias": (getattr(config, "mlp_bias", False), False),
        "rope_parameters.rope_type": (rope.get("rope_type", "default"), "default"),
        "head_dim": (config.head_dim, config.hidden_size // config.num_attention_heads),
    }
    for field, (value, supported) in problems.items():
        if value != supported:
            raise ValueError(f"GGUF export cannot represent {field}={value!r} (llama.cpp's llama architecture needs "
                             f"{supported!r}); export this model to ONNX instead.")


def _qk_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp rotates interleaved pairs; HF rotates the two halves of each head: reorder Q/K rows to match."""
    rows = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, rows, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tensors(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The model's weights under llama.cpp's names; no ``output.weight`` when it is tied to the embeddings."""
    config, state = model.config, model.state_dict()
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not config.tie_word_embeddings:
        names["lm_head.weight"] = "output.weight"
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(config.num_hidden_layers):
        names |= {f"model.layers.{i}.{hf}.weight": f"blk.{i}.{ours}.weight" for hf, ours in per_layer.items()}
    tensors = {ours: state[hf].detach().float() for hf, ours in names.items()}
    for i in range(config.num_hidden_layers):
        tensors[f"blk.{i}.attn_q.weight"] = _qk_rows(tensors[f"blk.{i}.attn_q.weight"], config.num_attention_heads)
        tensors[f"blk.{i}.attn_k.weight"] = _qk_rows(tensors[f"blk.{i}.attn_k.weight"], config.num_key_value_heads)
    return tensors


def _vocab(tokenizer: PreTrainedTokenizerBase, rows: int) -> dict[str, Any]:
    """The tokenizer as GGUF metadata: ``gpt2`` for a byte-level BPE, ``llama`` for a SentencePiece-style BPE with
    byte fallback (Llama-2's). Tokens are padded to the embedding's ``rows`` as llama.cpp's converter does."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model, decoder = spec["model"], spec.get("decoder") or {}
    if model["type"] != "BPE":
        raise ValueError(f"GGUF export cannot represent a {model['type']} tokenizer; it writes BPE tokenizers only.")
    byte_level = decoder.get("type") == "ByteLevel" and not model.get("byte_fallback")
    if not byte_level and not model.get("byte_fallback"):
        raise ValueError("GGUF export writes byte-level BPE (gpt2) or byte-fallback BPE (llama) tokenizers; this one "
                         "is neither.")
    vocab = tokenizer.get_vocab()
    if len(vocab) > rows:
        raise ValueError(f"The tokenizer has {len(vocab)} tokens but the model only {rows} embedding rows.")
    tokens = [f"[PAD{i}]" for i in range(rows)]
    for token, index in vocab.items():
        tokens[index] = token
    merges = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges", [])]
    rank = {"".join(m.split(" ")): -float(i) for i, m in reversed(list(enumerate(merges)))}  # earliest merge wins
    special = set(tokenizer.all_special_ids)
    types = []
    for index, token in enumerate(tokens):
        if index >= len(vocab) or token not in vocab:
            types.append(gguf.TokenType.UNUSED)
        elif index == tokenizer.unk_token_id and not byte_level:
            types.append(gguf.TokenType.UNKNOWN)
        elif index in special:
            types.append(gguf.TokenType.CONTROL)
        elif not byte_level and BYTE_TOKEN.fullmatch(token):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    with_specials = tokenizer("a").input_ids
    fields: dict[str, Any] = {
        "model": "gpt2" if byte_level else "llama",
        "tokens": tokens,
        "types": types,
        "merges": merges,
        # llama.cpp's SentencePiece tokenizer merges by score: a merge's score is minus its rank
        "scores": [rank.get(token, 0.0) for token in tokens],
        "add_bos": bool(with_specials) and with_specials[0] == tokenizer.bos_token_id,
        "add_eos": bool(with_specials) and with_specials[-1] == tokenizer.eos_token_id,
        "special_ids": {kind: getattr(tokenizer, f"{kind}_token_id") for kind in ("bos", "eos", "unk", "pad")},
    }
    if not byte_level:
        pre = spec.get("pre_tokenizer") or {}
        fields["add_space_prefix"] = pre.get("type") == "Metaspace" and pre.get("prepend_scheme") != "never"
    return fields


def write_gguf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path, dtype: str,
               name: str) -> None:
    """Write ``model`` and ``tokenizer`` to the GGUF file ``path``: 2-D weights in ``dtype`` (f32, f16, bf16), norms
    in f32 as llama.cpp expects."""
    import gguf

    config = model.config
    check_llama(config)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16}[dtype]
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its per-file INFO lines say nothing users need
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string(WRITER_KEY, __version__)
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)

    vocab = _vocab(tokenizer, config.vocab_size)
    writer.add_tokenizer_model(vocab["model"])
    writer.add_tokenizer_pre("gpt-2" if vocab["model"] == "gpt2" else "default")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_scores(vocab["scores"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for kind, token_id in vocab["special_ids"].items():
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(vocab["add_bos"])
    writer.add_add_eos_token(vocab["add_eos"])
    if "add_space_prefix" in vocab:
        writer.add_add_space_prefix(vocab["add_space_prefix"])

    for tensor_name, tensor in _tensors(model).items():
        if tensor.ndim == 1 or dtype == "f32":
            writer.add_tensor(tensor_name, tensor.numpy())
        elif dtype == "f16":
            writer.add_tensor(tensor_name, tensor.half().numpy())
        else:  # numpy has no bfloat16: hand the writer the raw 16-bit words
            words = tensor.bfloat16().view(torch.int16).numpy()
            writer.add_tensor(tensor_name, words, raw_shape=words.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def written_by_us(path: str | Path) -> bool:
    """Whether ``path`` is a GGUF file that ``write_gguf`` wrote (so an export may replace it)."""
    import gguf

    try:
        return WRITER_KEY in gguf.GGUFReader(str(path)).fields
    except Exception:  # not a GGUF file at all (the reader raises several kinds)
        return False
