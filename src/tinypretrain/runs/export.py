"""``tinypretrain export``: a finished run as GGUF (llama.cpp) or ONNX (ONNX Runtime, transformers.js), written
atomically and checked against the safetensors model before it is kept."""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.corpus import generate_stories
from ..model.build import load_model
from ..model.generate import generate
from ..train.card import EXPORTS_RECORD, read_exports, refresh_model_card
from ..utils.io import atomic_dir, atomic_path, atomic_write_json, check_replaceable
from .gguf import check_llama, write_gguf, written_by_us
from .onnx import past_names, write_onnx

DTYPES = {"gguf": ("f32", "f16", "bf16"), "onnx": ("f32", "f16")}
NEEDS = {"gguf": ("gguf",), "onnx": ("onnx", "onnxruntime", "onnxscript")}
# Bound on |logit difference|: GGUF against the safetensors model with its weights rounded to the same dtype (the file
# adds no error of its own), ONNX against the model in f32. ONNX f16 also computes in f16 (as would torch in f16: both
# land about 1% of the largest logit away from f32), so its bound is relative, and its greedy decoding is reported,
# not required to match: a near-tie may flip.
TOLERANCE = {("gguf", "f32"): 1e-4, ("gguf", "f16"): 1e-4, ("gguf", "bf16"): 1e-4, ("onnx", "f32"): 1e-4}
F16_RELATIVE = 1e-2


@dataclass
class Export:
    """One export: where it went and what its checks measured."""

    format: str
    dtype: str
    path: str
    bytes: int
    seconds: float
    checks: dict[str, Any] = field(default_factory=dict)


def default_output(run_dir: str | Path, fmt: str, dtype: str) -> Path:
    """``RUN/export/model-<dtype>.gguf`` or ``RUN/export/onnx`` (transformers.js names the ONNX file by dtype)."""
    return Path(run_dir) / "export" / (f"model-{dtype}.gguf" if fmt == "gguf" else "onnx")


def export_run(run_dir: str | Path, fmt: str, *, dtype: str = "f32", output: str | Path | None = None,
               with_past: bool = False, texts: list[str] | None = None) -> Export:
    """Export the finished run ``run_dir`` to ``fmt`` (gguf, onnx) in ``dtype``, check it on ``texts`` (default: 200
    built-in stories; logits on the first 8, tokenizer ids or greedy decoding on all), keep it only if the checks pass,
    record it in ``RUN/export/exports.json`` and list it on the card."""
    if fmt not in DTYPES:
        raise ValueError(f"--format {fmt!r} is not supported; pick one of {', '.join(DTYPES)}.")
    if dtype not in DTYPES[fmt]:
        raise ValueError(f"--dtype {dtype!r} is not supported for {fmt}; pick one of {', '.join(DTYPES[fmt])}.")
    missing = [name for name in NEEDS[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"{fmt} export needs {', '.join(missing)}: pip install \"tinypretrain[export]\"")
    if not (Path(run_dir) / "config.json").exists():
        raise ValueError(f"{run_dir} is not a model folder (no config.json); pass a finished run's output_dir.")
    target = Path(output) if output is not None else default_output(run_dir, fmt, dtype)
    _check_writable(target, fmt)
    model, tokenizer = load_model(run_dir)  # names a folder without weights or tokenizer
    texts = texts or generate_stories(200, seed=0)
    start = time.perf_counter()
    if fmt == "gguf":
        check_llama(model.config)  # before anything is created
        with atomic_path(target) as tmp:
            write_gguf(model, tokenizer, tmp, dtype, name=Path(run_dir).resolve().name)
            checks = check_gguf(model, tokenizer, tmp, dtype, texts)
        size = target.stat().st_size
    else:
        # their lines (graph rewrites; torchvision ops it skips) tell users nothing
        for name, level in (("onnxscript", logging.WARNING), ("onnx_ir", logging.WARNING), ("torch.onnx", logging.ERROR)):
            logging.getLogger(name).setLevel(level)
        with atomic_dir(target) as tmp:
            onnx_file = write_onnx(model, tokenizer, tmp, dtype, with_past)
            checks = check_onnx(model, tokenizer, onnx_file, dtype, texts)
            size = onnx_file.stat().st_size
    export = Export(fmt, dtype, str(target), size, round(time.perf_counter() - start, 2), checks)
    if target.resolve().parent == default_output(run_dir, "onnx", dtype).resolve().parent:
        _record(run_dir, export)
        refresh_model_card(run_dir)
    return export


def _check_writable(target: Path, fmt: str) -> None:
    """Refuse, before any work, an output that cannot or must not be written: GGUF is a file, ONNX a folder."""
    if fmt == "gguf":
        if target.suffix != ".gguf" or target.is_dir():
            raise ValueError(f"--output {target}: pass a file path ending in .gguf.")
        if target.exists() and not written_by_us(target):
            raise ValueError(f"--output {target} exists and tinypretrain did not write it; pick another path.")
    else:
        check_replaceable(target)
    parent = next((p for p in [target.parent, *target.parent.parents] if p.exists()), Path("/"))
    if not parent.is_dir():
        raise ValueError(f"--output {target}: {parent} is a file, not a folder; pick another path.")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--output {target}: {parent} is not writable; pick a folder you can write to.")


def _rounded(model: Any, dtype: str) -> Any:
    """A copy of ``model`` with its matrices rounded to ``dtype`` and back: what the export should compute."""
    model = copy.deepcopy(model)
    rounding = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(parameter.to(rounding).float())
    return model.eval()


def _batch(tokenizer: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    length = min(tokenizer.model_max_length, 256)
    return tokenizer(texts[:8], return_tensors="pt", padding=True, truncation=True, max_length=length)


def _max_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((torch.as_tensor(a).float() - b.float())[mask.bool()].abs().max())


def _fail_if_over(checks: dict[str, Any], fmt: str, dtype: str) -> dict[str, Any]:
    bound = TOLERANCE.get((fmt, dtype), F16_RELATIVE * max(1.0, checks.get("max_abs_logit", 0.0)))
    checks["bound"] = bound
    if checks["max_logit_diff"] > bound:
        raise ValueError(f"The {fmt} export's logits differ from the model's by {checks['max_logit_diff']:.2g} "
                         f"(bound {bound:g}); nothing was kept. Please report this with the run's config.json.")
    return checks


@torch.no_grad()
def check_gguf(model: Any, tokenizer: Any, path: str | Path, dtype: str, texts: list[str]) -> dict[str, Any]:
    """Read the GGUF file back with transformers: its tokenizer must encode ``texts`` to ``tokenizer``'s ids, and its
    logits on 8 of them must match ``model``'s with its matrices rounded to ``dtype``; raises ValueError if not."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    exported = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    mismatched = sum(tokenizer(t, verbose=False).input_ids != exported(t, verbose=False).input_ids for t in texts)
    if mismatched:
        raise ValueError(f"The GGUF tokenizer encodes {mismatched} of {len(texts)} texts differently from the run's; "
                         "nothing was kept. Please report this with the run's tokenizer.json.")
    exported_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                          dtype=torch.float32).eval()
    batch = _batch(tokenizer, texts)
    mask = batch["attention_mask"]
    logits = exported_model(**batch).logits
    checks = {"texts_tokenized_equal": len(texts), "logit_texts": len(batch["input_ids"]),
              "max_logit_diff": _max_diff(logits, _rounded(model, dtype)(**batch).logits, mask),
              "max_logit_diff_vs_f32": _max_diff(logits, model.eval()(**batch).logits, mask)}
    return _fail_if_over(checks, "gguf", dtype)


def ort_greedy(session: Any, prompt_ids: list[int], max_new_tokens: int, eos: int, with_past: bool,
               cache_shape: tuple[int, int], dtype: Any) -> list[int]:
    """Greedy decoding with an ONNX Runtime session of ``write_onnx``'s export, stopping after EOS."""
    ids = list(prompt_ids)
    names = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    feeds = {n: np.zeros((1, cache_shape[0], 0, cache_shape[1]), dtype=dtype) for n in names}
    step_ids, new = ids, []
    for _ in range(max_new_tokens):
        inputs = {"input_ids": np.array([step_ids]), "attention_mask": np.ones((1, len(ids)), dtype=np.int64)}
        if with_past:
            inputs["position_ids"] = np.arange(len(ids) - len(step_ids), len(ids))[None]
            inputs |= feeds
        out = session.run(None, inputs)
        token = int(out[0][0, -1].argmax())
        new.append(token)
        ids.append(token)
        if token == eos:
            break
        if with_past:
            feeds = dict(zip(names, out[1:]))
            step_ids = [token]
        else:
            step_ids = ids
    return new


@torch.no_grad()
def check_onnx(reference: Any, tokenizer: Any, path: str | Path, dtype: str, texts: list[str]) -> dict[str, Any]:
    """Run the ONNX file in ONNX Runtime: logits on 8 ``texts`` must match ``reference``'s (in f32), and (f32) greedy
    decoding of 32 tokens from 4 prompts must equal ``tinypretrain generate``'s."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with_past = any(i.name.startswith("past_key_values.") for i in session.get_inputs())
    reference.eval()
    batch = _batch(tokenizer, texts)
    feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
    np_dtype = np.float16 if dtype == "f16" else np.float32
    config = reference.config
    if with_past:
        length = batch["input_ids"].shape[1]
        feeds["position_ids"] = np.broadcast_to(np.arange(length), batch["input_ids"].shape).copy()
        feeds |= {n: np.zeros((len(batch["input_ids"]), config.num_key_value_heads, 0, config.head_dim), np_dtype)
                  for n in past_names(reference)}
    logits = session.run(["logits"], feeds)[0]
    expected = reference(**batch).logits
    checks: dict[str, Any] = {"logit_texts": len(batch["input_ids"]), "with_past": with_past,
                              "max_logit_diff": _max_diff(logits, expected, batch["attention_mask"]),
                              "max_abs_logit": float(expected.abs().max())}
    _fail_if_over(checks, "onnx", dtype)
    prompts, equal = [" ".join(text.split()[:4]) for text in texts[:4]], 0
    for prompt in prompts:
        ours = generate(reference, tokenizer, prompt, temperature=0, max_new_tokens=32)[0]
        prompt_ids = [tokenizer.eos_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]
        new = ort_greedy(session, prompt_ids, 32, tokenizer.eos_token_id, with_past,
                         (config.num_key_value_heads, config.head_dim), np_dtype)
        theirs = prompt + tokenizer.decode(new, skip_special_tokens=True)
        equal += theirs == ours
        if theirs != ours and dtype == "f32":
            raise ValueError(f"ONNX Runtime's greedy continuation of {prompt!r} differs from tinypretrain generate's "
                             f"({theirs!r} vs {ours!r}); nothing was kept. Please report this.")
    checks["greedy_prompts_equal"] = f"{equal} of {len(prompts)}"
    return checks


def _record(run_dir: str | Path, export: Export) -> None:
    """Add ``export`` to ``RUN/export/exports.json`` (one entry per path, the latest kept)."""
    path = Path(run_dir) / "export" / EXPORTS_RECORD
    entries = read_exports(run_dir, existing_only=False)
    relative = str(Path(export.path).resolve().relative_to(Path(run_dir).resolve()))
    entry = asdict(export) | {"path": relative, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(path, [e for e in entries if e["path"] != relative] + [entry])
