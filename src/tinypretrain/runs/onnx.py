"""ONNX export for ONNX Runtime and transformers.js: ``torch.onnx.export`` (dynamo) of the HF model, in the folder
layout transformers.js loads (``config.json``, tokenizer files, ``onnx/model.onnx``)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

# transformers.js picks the weights file by dtype: model.onnx (fp32), model_fp16.onnx
ONNX_FILES = {"f32": "model.onnx", "f16": "model_fp16.onnx"}


class _Logits(torch.nn.Module):
    """logits for input_ids and attention_mask: the model as ONNX Runtime users call it for scoring."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class _WithPast(torch.nn.Module):
    """One decoding step with the key/value cache as flat tensors, named as transformers.js feeds them:
    ``past_key_values.{layer}.key|value`` in, ``present.{layer}.key|value`` out."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = DynamicCache(config=self.model.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def past_names(model: PreTrainedModel) -> list[str]:
    """The key/value cache inputs of a ``with_past`` export, in order."""
    return [f"past_key_values.{i}.{kind}" for i in range(model.config.num_hidden_layers) for kind in ("key", "value")]


def write_onnx(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path, dtype: str,
               with_past: bool) -> Path:
    """Export ``model`` in ``dtype`` (f32, f16) into ``folder``/onnx/, with its config and tokenizer beside; returns
    the .onnx path. One self-contained file: these models are far below ONNX's 2 GB limit."""
    folder = Path(folder)
    model = copy.deepcopy(model).eval().to(torch.float16 if dtype == "f16" else torch.float32)  # the caller's stays
    model.config.use_cache = with_past
    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    batch, length, auto = 2, 3, torch.export.Dim.AUTO
    input_ids = torch.randint(0, len(tokenizer), (batch, length))
    if with_past:
        config = model.config
        past_length = 4
        past = [torch.zeros(batch, config.num_key_value_heads, past_length, config.head_dim, dtype=model.dtype)
                for _ in past_names(model)]
        args = (input_ids, torch.ones(batch, past_length + length, dtype=torch.long),
                torch.arange(past_length, past_length + length).expand(batch, length), *past)
        names = ["input_ids", "attention_mask", "position_ids", *past_names(model)]
        outputs = ["logits", *(name.replace("past_key_values", "present") for name in past_names(model))]
        shapes = {"input_ids": {0: auto, 1: auto}, "attention_mask": {0: auto, 1: auto},
                  "position_ids": {0: auto, 1: auto}, "past": tuple({0: auto, 2: auto} for _ in past)}
        module: torch.nn.Module = _WithPast(model)
    else:
        args = (input_ids, torch.ones(batch, length, dtype=torch.long))
        names, outputs = ["input_ids", "attention_mask"], ["logits"]
        shapes = {"input_ids": {0: auto, 1: auto}, "attention_mask": {0: auto, 1: auto}}
        module = _Logits(model)
    path = folder / "onnx" / ONNX_FILES[dtype]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch's own deprecations inside the exporter: nothing a user can act on
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(module.eval(), args, str(path), dynamo=True, input_names=names, output_names=outputs,
                          dynamic_shapes=shapes, external_data=False, verbose=False)
    _name_dims(path)
    return path


# What each dynamic axis is called in inputs and outputs. transformers.js builds the first step's empty cache from
# these names: "batch_size" gets the batch, any other name length 0.
_DIM_NAMES = {"input_ids": ("batch_size", "sequence_length"), "position_ids": ("batch_size", "sequence_length"),
              "attention_mask": ("batch_size", "total_sequence_length"),
              "logits": ("batch_size", "sequence_length", None)}
_CACHE_DIMS = {"past_key_values.": ("batch_size", None, "past_sequence_length", None),
               "present.": ("batch_size", None, "total_sequence_length", None)}


def _name_dims(path: Path) -> None:
    """Give the exported graph's symbolic axes (torch.export calls them s0, s1, ...) the names runtimes read."""
    import onnx

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        names = _DIM_NAMES.get(value.name) or next(
            (dims for prefix, dims in _CACHE_DIMS.items() if value.name.startswith(prefix)), ())
        for dim, name in zip(value.type.tensor_type.shape.dim, names):
            if name is not None and dim.HasField("dim_param"):
                dim.dim_param = name
    onnx.save(model, str(path))
