"""pretrain(): one call from text to a trained, evaluated, shareable model, driven by HF Trainer."""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset, IterableDataset
from transformers import LlamaConfig, PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers import __version__ as transformers_version

from .collate import causal_collator
from .config import DEFAULT_CONTEXT, PRESETS, make_llama_config
from .corpus import story_dataset
from .data import load_text_dataset, pack_dataset, pack_stream, tokenize_truncate
from .evaluate import evaluate
from .generate import generate
from .io import atomic_write_json, atomic_write_text
from .loss import causal_lm_loss
from .model import build_model, count_parameters
from .tokenizer import load_tokenizer, train_tokenizer

logger = logging.getLogger("tinypretrain")

TOKENIZER_SAMPLE = 50_000  # texts a streamed run trains its tokenizer on
SAMPLE_PROMPTS = ("", "Once upon a time", "One day, a little girl named Lily", "Tom and his dog")
COMPLETE_MARKER = "tinypretrain_complete"  # written last into a checkpoint; resume trusts only marked ones
# The default step on CUDA: the 64x512 shape of the H200 measurements in benchmarks/RESULTS.md (smaller steps leave
# the GPU waiting on Python); on CPU, 8 blocks per step reached the seed's loss fastest.
CUDA_TOKENS_PER_STEP = 32_768
CPU_BLOCKS_PER_STEP = 8
# TrainingArguments that pretrain() sets for reasons of its own, so training_args may not replace them.
FIXED_TRAINING_ARGS = {
    "eval_strategy": "it evaluates every eval_steps",
    "save_strategy": "it checkpoints every save_steps",
    "logging_nan_inf_filter": "its divergence check must see NaN/inf losses",
}


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN/inf."""


# Named bundles of settings. "seed" is the blog recipe we reproduce (its one bug, the EOS-masking collator, is
# not copied); "fast" is the seed's model and data with the settings we recommend (benchmarks/RESULTS.md).
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {
        "dataset": "noanabeshima/TinyStoriesV2",
        "train_split": "train[:10%]",
        "tokenizer": "NousResearch/Llama-2-7b-hf",
        "preset": "seed-20m",
        "packing": "truncate",
        "max_length": 2048,
        "init": "kaiming",
        "learning_rate": 1e-4,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.0,
        "weight_decay": 0.0,
        "adam_beta2": 0.999,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": 2.0,
        "eval_steps": 1000,
        "save_steps": 1000,
        "save_total_limit": 2,
        "logging_steps": 50,
        "max_eval_samples": None,
    },
    "fast": {
        "dataset": "noanabeshima/TinyStoriesV2",
        "train_split": "train[:10%]",
        "tokenizer": "NousResearch/Llama-2-7b-hf",
        "preset": "seed-20m",
        "max_length": 512,
        "max_eval_samples": None,
    },
}


@dataclass
class PretrainConfig:
    """Everything a run needs; serves Python, the CLI (``HfArgumentParser``) and YAML/JSON files alike.

    Names follow ``TrainingArguments`` where they overlap. Fields left at ``None`` are chosen per device
    (bf16 and ``torch.compile`` on CUDA, fp32 and eager on CPU).
    """

    recipe: str | None = field(
        default=None, metadata={"help": "'seed' (the blog's exact settings) or 'fast'; fields you set still win."}
    )
    # data
    dataset: str | None = field(
        default=None, metadata={"help": "Hub name or local path; None = the built-in story generator."}
    )
    train_split: str = field(default="train", metadata={"help": "Split (slices allowed, e.g. train[:10%%])."})
    eval_split: str | None = field(
        default="validation", metadata={"help": "Eval split; if the source lacks it, eval_size texts are held out."}
    )
    text_column: str = "text"
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training texts."})
    max_eval_samples: int | None = field(default=500, metadata={"help": "Evaluate on at most this many texts."})
    eval_size: int = field(default=500, metadata={"help": "Texts held out for eval when there is no eval split."})
    builtin_stories: int = field(default=12000, metadata={"help": "Stories generated when dataset is None."})
    max_length: int = field(default=256, metadata={"help": "Block length (pack) or max story tokens (truncate)."})
    packing: str = field(
        default="pack",
        metadata={
            "help": "'pack' = fixed blocks, no padding; 'pack_documents' = the same, but each text attends only to "
            "itself (position ids restart at EOS); 'truncate' = the seed's padded stories."
        },
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenization (datasets.map)."})
    streaming: bool = field(
        default=False, metadata={"help": "Stream the corpus instead of caching it (needs max_steps and packing)."}
    )
    # tokenizer
    tokenizer: str | None = field(default=None, metadata={"help": "Hub name or path; None = train a byte-level BPE."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the tokenizer trained when tokenizer=None."})
    # model
    preset: str = field(default="cpu-2m", metadata={"help": "Model shape; see tinypretrain.list_presets()."})
    model_overrides: dict | str | None = field(
        default=None, metadata={"help": "make_llama_config fields as a dict or JSON, e.g. '{\"hidden_size\": 192}'."}
    )
    # Kaiming and a constant rate after warmup each beat HF-normal init and cosine decay in equal-step CPU
    # ablations, and together most (-0.38 nats at 192 steps; benchmarks/RESULTS.md, runs 3-6).
    init: str = field(default="kaiming", metadata={"help": "'kaiming' (the seed's) or 'normal' (HF, std 0.02)."})
    # training
    output_dir: str | None = field(default=None, metadata={"help": "Default: runs/<timestamp>."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing run in output_dir."})
    num_train_epochs: float = 1.0
    max_steps: int = field(default=-1, metadata={"help": "Overrides num_train_epochs when > 0."})
    per_device_train_batch_size: int | None = field(
        default=None,
        metadata={"help": "Blocks per device per step. None = 8 on CPU; on CUDA, 32,768 tokens' worth (128 x 256)."},
    )
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-3
    lr_scheduler_type: str = field(
        default="constant_with_warmup", metadata={"help": "Any Trainer schedule, e.g. 'cosine' (the seed's)."}
    )
    warmup_steps: float = field(default=0.05, metadata={"help": "Steps, or a fraction of all steps when < 1."})
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    seed: int = 3407
    logging_steps: int = 10
    eval_steps: int | None = field(default=None, metadata={"help": "Default: about 5 evaluations per run."})
    save_steps: int | None = field(default=None, metadata={"help": "Default: eval_steps."})
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint path, or true to continue from output_dir's last complete one."}
    )
    report_to: str = "none"
    bf16: bool | None = None
    torch_compile: bool | None = None
    torch_compile_mode: str | None = field(
        default=None, metadata={"help": "torch.compile mode: 'reduce-overhead' adds CUDA graphs; None = default."}
    )
    avoid_host_syncs: bool = field(
        default=True,
        metadata={
            "help": "Count tokens without a per-step GPU->CPU sync and copy batches asynchronously from pinned "
            "memory; false = Trainer's stock behaviour."
        },
    )
    loss_chunk_size: int | None = field(
        default=None, metadata={"help": "Compute lm_head+CE in token chunks (saves logits memory, costs a matmul)."}
    )
    dataloader_num_workers: int | None = None
    num_samples: int = field(default=4, metadata={"help": "Stories written to samples.md."})
    training_args: dict | str | None = field(
        default=None, metadata={"help": "Extra TrainingArguments as a dict or JSON string (escape hatch)."}
    )

    def __post_init__(self) -> None:
        if self.recipe is not None:
            if self.recipe not in RECIPES:
                raise ValueError(f"Unknown recipe {self.recipe!r}; choose one of {sorted(RECIPES)}.")
            for name, value in RECIPES[self.recipe].items():
                if name not in self._explicit:  # fields you set win over the recipe
                    setattr(self, name, value)
        self.model_overrides = _as_dict(self.model_overrides, "model_overrides")
        self.training_args = _as_dict(self.training_args, "training_args")
        if isinstance(self.resume_from_checkpoint, str) and self.resume_from_checkpoint.lower() in ("true", "last"):
            self.resume_from_checkpoint = True
        if isinstance(self.resume_from_checkpoint, str) and self.resume_from_checkpoint.lower() in ("false", ""):
            self.resume_from_checkpoint = None
        problems = _training_args_clashes(self.training_args)
        if self.packing not in ("pack", "pack_documents", "truncate"):
            problems.append(f"packing must be 'pack', 'pack_documents' or 'truncate', got {self.packing!r}")
        if self.init not in ("normal", "kaiming"):
            problems.append(f"init must be 'normal' or 'kaiming', got {self.init!r}")
        if self.preset not in PRESETS:
            problems.append(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.max_length < 2:
            problems.append(f"max_length must be >= 2, got {self.max_length}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "builtin_stories", "vocab_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "weight_decay", "warmup_steps", "num_train_epochs", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.torch_compile is False and self.torch_compile_mode is not None:
            problems.append("torch_compile_mode needs torch_compile (leave torch_compile unset or true)")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            problems.append("set num_train_epochs > 0 or max_steps > 0")
        if self.streaming and (self.max_steps <= 0 or self.packing == "truncate" or self.dataset is None):
            problems.append("streaming needs a dataset, max_steps > 0 (a stream has no length) and packing")
        if problems:
            raise ValueError("Invalid PretrainConfig: " + "; ".join(problems) + ".")

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> PretrainConfig:
        """Load a YAML or JSON file of fields; unknown keys are an error that lists the valid ones."""
        return cls.from_dict({**read_config_file(path), **overrides}, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "arguments") -> PretrainConfig:
        """Build from a mapping, rejecting unknown keys with the list of valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"Unknown PretrainConfig key(s) {unknown} in {source}. Valid keys: {', '.join(sorted(names))}."
            )
        return cls(**data)


def _training_args_clashes(training_args: dict[str, Any]) -> list[str]:
    """training_args keys that would set a TrainingArgument twice, each with the way to set it instead."""
    fields_ = {f.name for f in fields(PretrainConfig)}
    problems = []
    for key in sorted(training_args):
        if key in fields_:
            problems.append(f"training_args[{key!r}] is a PretrainConfig field: set it as {key}=... (CLI --{key})")
        elif key in FIXED_TRAINING_ARGS:
            problems.append(f"training_args[{key!r}] is set by pretrain() ({FIXED_TRAINING_ARGS[key]}); remove it")
    return problems


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of fields in a YAML or JSON config file (not yet validated)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"Cannot read config file {path}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of PretrainConfig fields, got {type(data).__name__}.")
    return data


def _record_explicit_fields(init: Any) -> Any:
    """Wrap the dataclass __init__ to remember which fields the caller set, so recipes fill in only the rest."""
    names = [f.name for f in fields(PretrainConfig)]

    def __init__(self: PretrainConfig, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_explicit", frozenset(names[: len(args)]) | frozenset(kwargs))
        init(self, *args, **kwargs)

    return __init__


PretrainConfig.__init__ = _record_explicit_fields(PretrainConfig.__init__)


def _as_dict(value: dict | str | None, name: str) -> dict:
    if value is None or isinstance(value, dict):
        return dict(value or {})
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} must be a dict or a JSON object string: {err}.") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object, got {value!r}.")
    return parsed


@dataclass
class PretrainResult:
    """What ``pretrain()`` produced: the trained model and tokenizer, where they are, and the run's metrics."""

    model: PreTrainedModel
    tokenizer: Any
    output_dir: Path
    metrics: dict[str, float]


# ------------------------------------------------------------------------------------------------------- trainer
class _PretrainTrainer(Trainer):
    """Trainer with per-story evaluation, an optional chunked loss, sync-free token counting, and crash-safe,
    NaN-free checkpoints."""

    def __init__(self, *args: Any, eval_texts: list[str], loss_chunk_size: int | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eval_texts = eval_texts
        self.loss_chunk_size = loss_chunk_size
        # Trainer's own token counter calls .item() every step, which stalls the host until the GPU catches up.
        # Ours counts packed rows from their shape on the host (every slot is a real token) and padded rows on the
        # device, and reads the total only when logging or saving.
        self.count_tokens = self.args.include_num_input_tokens_seen == "no"
        self._host_tokens, self._device_tokens = 0, None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.count_tokens and model.training:
            self._count_tokens(inputs)
        # Training never needs a KV cache, and without one transformers honours per-document position ids.
        inputs = {**inputs, "use_cache": False}
        if self.loss_chunk_size is None or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        # Through the wrapped model (DDP/FSDP hooks run), keeping one logit; the loss comes from hidden states.
        hidden = model(**inputs, logits_to_keep=1, output_hidden_states=True).hidden_states[-1]
        head = self.accelerator.unwrap_model(model).get_output_embeddings().weight
        nats = causal_lm_loss(hidden, head, labels, chunk_size=self.loss_chunk_size)
        if num_items_in_batch is None:
            return nats / (labels[:, 1:] != -100).sum().clamp(min=1)
        # Same normalisation as HF's ForCausalLMLoss with num_items_in_batch (gradient accumulation / DDP).
        scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        return nats / num_items_in_batch * scale

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        mask = inputs.get("attention_mask")
        if mask is None:
            self._host_tokens += inputs["input_ids"].numel()
        else:
            real = mask.sum()
            self._device_tokens = real if self._device_tokens is None else self._device_tokens + real

    def _flush_token_count(self) -> None:
        """Add the tokens counted since the last flush, over all ranks, to ``state`` (a collective: all ranks call)."""
        if not self.count_tokens:
            return
        local = torch.tensor([self._host_tokens], device=self.args.device)
        if self._device_tokens is not None:
            local += self._device_tokens.to(local.device)
        self.state.num_input_tokens_seen += int(self.accelerator.gather(local).sum())
        self._host_tokens, self._device_tokens = 0, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self._flush_token_count()
        if self.count_tokens and "loss" in logs:
            logs = {**logs, "num_input_tokens_seen": self.state.num_input_tokens_seen}
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        start = time.perf_counter()
        scores = evaluate(self.model, self.processing_class, self.eval_texts)
        metrics = {
            f"{metric_key_prefix}_{k}": v for k, v in scores.items() if k in ("loss", "perplexity", "bits_per_byte")
        }
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _save_checkpoint(self, model, trial) -> None:
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingDivergedError(
                f"Weights became NaN/inf before step {self.state.global_step}; not saving them over good checkpoints."
            )
        self._flush_token_count()
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            (folder / COMPLETE_MARKER).write_text(str(self.state.global_step))


class _DivergenceGuard(TrainerCallback):
    """Stop at the first logged NaN/inf loss (Trainer's nan filter is off so we can see it)."""

    def __init__(self) -> None:
        self.bad_step: int | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.bad_step = state.global_step
            control.should_training_stop = True
            control.should_save = False


# ------------------------------------------------------------------------------------------------------- helpers
def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that finished saving (half-written ones are ignored)."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / COMPLETE_MARKER).exists():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _prepare_output_dir(cfg: PretrainConfig, check: bool = True) -> Path:
    out = Path(cfg.output_dir or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")).expanduser()
    if not check:  # another rank: the main process has validated and created it
        return out
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is an existing file; pass a directory path.")
    if cfg.resume_from_checkpoint:
        return out
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite_output_dir:
            raise ValueError(
                f"output_dir {out} already holds files (another run?). Pass resume_from_checkpoint=true to continue "
                "it, overwrite_output_dir=true to replace it, or a new output_dir."
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _resolve_checkpoint(cfg: PretrainConfig, out: Path) -> str | None:
    if not cfg.resume_from_checkpoint:
        return None
    if cfg.resume_from_checkpoint is True:
        checkpoint = last_complete_checkpoint(out)
        if checkpoint is None:
            raise ValueError(
                f"resume_from_checkpoint=true but {out} has no complete checkpoint-N folder. Start without resuming, "
                "or point resume_from_checkpoint at a checkpoint folder."
            )
    else:
        checkpoint = Path(cfg.resume_from_checkpoint)
    _check_checkpoint(checkpoint)
    return str(checkpoint)


def _check_checkpoint(checkpoint: Path) -> None:
    """Fail early, with the fix, on a checkpoint Trainer could not load (rather than deep inside train())."""
    from safetensors import SafetensorError, safe_open

    hint = "Delete it to resume from an earlier checkpoint, or start without resume_from_checkpoint."
    for name in ("trainer_state.json", "model.safetensors", "optimizer.pt"):
        if not (checkpoint / name).exists():
            raise ValueError(f"{checkpoint} is not a usable checkpoint: {name} is missing. {hint}")
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        with safe_open(checkpoint / "model.safetensors", framework="pt") as weights:
            next(iter(weights.keys()))
    except (json.JSONDecodeError, SafetensorError, StopIteration, OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{checkpoint} is corrupt ({type(err).__name__}: {err}). {hint}") from None


def _nonblank(ds: Dataset | IterableDataset, text_column: str) -> Dataset | IterableDataset:
    return ds.filter(lambda b: [bool(t and t.strip()) for t in b[text_column]], batched=True)


def _load_stream(cfg: PretrainConfig) -> tuple[IterableDataset, list[str]]:
    splits = load_text_dataset(cfg.dataset, split=None, text_column=cfg.text_column, streaming=True)
    train = load_text_dataset(cfg.dataset, split=cfg.train_split, text_column=cfg.text_column, streaming=True)
    train = _nonblank(train, cfg.text_column)
    if cfg.eval_split and cfg.eval_split.split("[")[0] in splits:
        evals = load_text_dataset(cfg.dataset, split=cfg.eval_split, text_column=cfg.text_column, streaming=True)
        eval_texts = [row[cfg.text_column] for row in islice(evals, cfg.max_eval_samples or cfg.eval_size)]
    else:  # hold out the stream's first texts
        eval_texts = [row[cfg.text_column] for row in islice(train, cfg.eval_size)]
        train = train.skip(cfg.eval_size)
    if cfg.max_train_samples is not None:
        train = train.take(cfg.max_train_samples)
    if next(iter(train), None) is None:
        raise ValueError(f"The training stream of {cfg.dataset} is empty (or only blank texts).")
    if not eval_texts:
        raise ValueError(f"No eval texts in {cfg.dataset}; set eval_split or eval_size.")
    return train, eval_texts


def _stream_blocks(texts: IterableDataset, tokenizer: Any, max_length: int, text_column: str) -> Iterator[dict]:
    batches = (
        tokenize_truncate(batch, tokenizer, max_length=max_length, text_column=text_column, overflow="split")[
            "input_ids"
        ]
        for batch in texts.iter(batch_size=1000)
    )
    for block in pack_stream(batches, max_length):
        yield {"input_ids": block}


def _load_texts(cfg: PretrainConfig) -> tuple[Dataset | IterableDataset, list[str]]:
    if cfg.streaming:
        return _load_stream(cfg)
    source = cfg.dataset or "the built-in story generator"
    if cfg.dataset is None:
        train = story_dataset(cfg.builtin_stories, seed=cfg.seed)
        seen = set(train["text"])
        extra = story_dataset(cfg.eval_size * 3, seed=cfg.seed + 1)["text"]
        eval_texts = [t for t in dict.fromkeys(extra) if t not in seen][: cfg.eval_size]
    else:
        splits = load_text_dataset(cfg.dataset, split=None, text_column=cfg.text_column)
        train = _nonblank(
            load_text_dataset(cfg.dataset, split=cfg.train_split, text_column=cfg.text_column), cfg.text_column
        )
        if len(train) == 0:
            raise ValueError(f"The training split {cfg.train_split!r} of {source} is empty (or only blank texts).")
        if cfg.eval_split and cfg.eval_split.split("[")[0] in splits:
            eval_texts = load_text_dataset(cfg.dataset, split=cfg.eval_split, text_column=cfg.text_column)[
                cfg.text_column
            ]
        elif len(train) < 2:
            raise ValueError(
                f"{source} has one training text and no {cfg.eval_split!r} split to evaluate on; add data."
            )
        else:
            held = train.train_test_split(test_size=min(cfg.eval_size, max(1, len(train) // 10)), seed=cfg.seed)
            train, eval_texts = held["train"], held["test"][cfg.text_column]
    if cfg.max_train_samples is not None:
        train = train.select(range(min(cfg.max_train_samples, len(train))))
    eval_texts = [t for t in eval_texts if t and t.strip()][: cfg.max_eval_samples]
    if len(train) == 0:
        raise ValueError(f"No training texts from {source}; raise max_train_samples or builtin_stories.")
    if not eval_texts:
        raise ValueError(f"The eval texts of {source} are empty (or only blank); set eval_split or eval_size.")
    return train, eval_texts


def _make_tokenizer(cfg: PretrainConfig, train_texts: Dataset | IterableDataset, checkpoint: str | None) -> Any:
    if cfg.tokenizer is not None:
        return load_tokenizer(cfg.tokenizer)
    if checkpoint is not None:
        return load_tokenizer(checkpoint)  # the tokenizer this run trained, saved with each checkpoint
    if cfg.streaming:  # learn the vocabulary from the stream's head
        train_texts = [row[cfg.text_column] for row in islice(train_texts, TOKENIZER_SAMPLE)]
    return train_tokenizer(
        train_texts, vocab_size=cfg.vocab_size, model_max_length=cfg.max_length, text_column=cfg.text_column
    )


def _model_config(cfg: PretrainConfig, tokenizer: Any) -> LlamaConfig:
    fields_ = {"preset": cfg.preset, **cfg.model_overrides}
    fields_.setdefault("vocab_size", -(-len(tokenizer) // 64) * 64)  # embeddings sized to the tokenizer
    # The preset's context (2048 unless it says otherwise), so long stories can be evaluated and generated.
    context = PRESETS[cfg.preset].get("max_position_embeddings", DEFAULT_CONTEXT)
    fields_.setdefault("max_position_embeddings", max(cfg.max_length, context))
    config = make_llama_config(
        **fields_,
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
    return config


def _tokenize(cfg: PretrainConfig, train: Dataset | IterableDataset, tokenizer: Any) -> Dataset | IterableDataset:
    if cfg.streaming:  # tokenized and packed on the fly, as Trainer pulls batches
        kwargs = {"texts": train, "tokenizer": tokenizer, "max_length": cfg.max_length, "text_column": cfg.text_column}
        return IterableDataset.from_generator(_stream_blocks, gen_kwargs=kwargs)
    pack = cfg.packing != "truncate"
    tokenized = train.map(
        tokenize_truncate,
        batched=True,
        num_proc=cfg.num_proc,
        remove_columns=train.column_names,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_length": cfg.max_length,
            "text_column": cfg.text_column,
            "overflow": "split" if pack else "truncate",
        },
        desc="Tokenizing",
    )
    # numpy rows: the dataloader fetches a 64x512 batch 2.7x faster than as Python lists (benchmarks/RESULTS.md).
    return (pack_dataset(tokenized, cfg.max_length) if pack else tokenized).with_format("numpy")


def _cpu_only() -> bool:
    return not (torch.cuda.is_available() or torch.backends.mps.is_available())


def _device_defaults(cfg: PretrainConfig) -> dict[str, Any]:
    """The TrainingArguments that depend on the device: what a None field resolves to, and the speed levers."""
    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    batch = cfg.per_device_train_batch_size
    if batch is None:
        batch = max(CPU_BLOCKS_PER_STEP, CUDA_TOKENS_PER_STEP // cfg.max_length) if cuda else CPU_BLOCKS_PER_STEP
    compile_ = cfg.torch_compile if cfg.torch_compile is not None else cuda or cfg.torch_compile_mode is not None
    return {
        "per_device_train_batch_size": batch,
        "bf16": bf16,
        "fp16": bool(cuda and not bf16 and cfg.bf16 is None),
        "torch_compile": compile_,
        "torch_compile_mode": cfg.torch_compile_mode,
        "dataloader_num_workers": cfg.dataloader_num_workers
        if cfg.dataloader_num_workers is not None
        else (4 if cuda else 0),
        "dataloader_pin_memory": cuda,
        "accelerator_config": {"non_blocking": cuda and cfg.avoid_host_syncs},
        "include_num_input_tokens_seen": "no" if cfg.avoid_host_syncs else "non_padding",
        "use_cpu": _cpu_only(),  # also makes multi-process CPU runs use gloo
    }


@functools.cache  # register once per process
def _destroy_process_group_at_exit() -> None:
    """Destroy the process group when the script ends, unless it already did: a group left alive until interpreter
    shutdown can abort the process (gloo: SIGABRT, "terminate called without an active exception") after a run
    that succeeded. At exit no more collectives can run, so this is safe for scripts that call pretrain() twice."""
    atexit.register(lambda: torch.distributed.is_initialized() and torch.distributed.destroy_process_group())


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _plot_losses(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    for points, label in ((train, "train loss"), (evals, "eval loss (per story)")):
        if points:
            ax.plot(*zip(*points), marker="." if label.startswith("eval") else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("nats / token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=100)
    plt.close(fig)
    os.replace(tmp.name, path)


def _save_final(trainer: Trainer, tokenizer: Any, out: Path) -> None:
    # Save into a scratch folder, then move each file into place: every file in out/ is always whole.
    # Every rank calls save_model (FSDP gathers the weights collectively); only the main process writes.
    scratch = out / ".final"
    trainer.save_model(str(scratch))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(scratch)
        for item in scratch.iterdir():
            if item.name != "training_args.bin":
                os.replace(item, out / item.name)
        shutil.rmtree(scratch)
    trainer.accelerator.wait_for_everyone()


def _write_samples(model: PreTrainedModel, tokenizer: Any, cfg: PretrainConfig, path: Path) -> None:
    prompts = [SAMPLE_PROMPTS[i % len(SAMPLE_PROMPTS)] for i in range(cfg.num_samples)]
    stories = generate(model, tokenizer, prompts, max_new_tokens=min(200, cfg.max_length), seed=cfg.seed)
    body = "\n\n".join(f"## Prompt: {p!r}\n\n{s}" for p, s in zip(prompts, stories))
    atomic_write_text(path, f"# Samples\n\n{body}\n")


def _versions() -> dict[str, str]:
    import accelerate
    import datasets

    from . import __version__

    return {
        "tinypretrain": __version__,
        "torch": torch.__version__,
        "transformers": transformers_version,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "python": sys.version.split()[0],
    }


# ------------------------------------------------------------------------------------------------------- pretrain
def pretrain(
    config: PretrainConfig | None = None, *, callbacks: list[TrainerCallback] | None = None, **overrides: Any
) -> PretrainResult:
    """Train a tiny LLaMA from text and write a shareable run folder; returns the model, tokenizer and metrics.

    ``config`` fields can be overridden by keyword (``pretrain(max_steps=100)``). The run folder holds the final
    model and tokenizer (safetensors, loadable by ``AutoModelForCausalLM``/``AutoTokenizer`` without tinypretrain),
    ``run.json`` (config, versions, metrics), ``metrics.jsonl``, ``loss.png``, ``samples.md`` and resumable
    checkpoints. ``callbacks`` are extra ``TrainerCallback``s (logging, timing, early stopping). Raises
    ``TrainingDivergedError`` on a NaN/inf loss, keeping the last good checkpoint.
    """
    cfg = PretrainConfig.from_dict({**(asdict(config) if config else {}), **overrides})
    wall_start = time.perf_counter()
    # Joins the process group of torchrun / accelerate launch (gloo on CPU); trivial for one process.
    state = PartialState(cpu=_cpu_only())
    if state.use_distributed:
        _destroy_process_group_at_exit()
    with state.main_process_first():  # rank 0 checks the folder and fills the datasets cache; the others reuse it
        out = _prepare_output_dir(cfg, check=state.is_main_process)
        checkpoint = _resolve_checkpoint(cfg, out)
        train_texts, eval_texts = _load_texts(cfg)
        tokenizer = _make_tokenizer(cfg, train_texts, checkpoint)
        model_config = _model_config(cfg, tokenizer)
        train_ds = _tokenize(cfg, train_texts, tokenizer)
    model = build_model(model_config, init=cfg.init, seed=cfg.seed)
    if state.is_main_process:
        logger.info("Model:\n%s", count_parameters(model))

    device_args = {**_device_defaults(cfg), **cfg.training_args}
    micro_batch, accumulation = device_args["per_device_train_batch_size"], cfg.gradient_accumulation_steps
    if cfg.max_steps > 0:  # always the case for streams, which have no length
        steps_estimate = cfg.max_steps
    else:
        steps_estimate = math.ceil(len(train_ds) / (micro_batch * accumulation) * cfg.num_train_epochs)
    eval_steps = cfg.eval_steps or max(1, steps_estimate // 5)
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        gradient_accumulation_steps=accumulation,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_nan_inf_filter=False,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps or eval_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to,
        **device_args,
    )
    guard = _DivergenceGuard()
    trainer = _PretrainTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=Dataset.from_dict({"text": eval_texts}),
        data_collator=causal_collator(
            tokenizer,  # pads with the tokenizer's pad id, else its EOS
            document_eos_token_id=tokenizer.eos_token_id if cfg.packing == "pack_documents" else None,
        ),
        processing_class=tokenizer,
        callbacks=[guard, *(callbacks or [])],
        eval_texts=eval_texts,
        loss_chunk_size=cfg.loss_chunk_size,
    )
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    if guard.bad_step is not None:
        good = last_complete_checkpoint(out)
        raise TrainingDivergedError(
            f"Loss became NaN/inf at step {guard.bad_step}. Lower learning_rate (now {cfg.learning_rate}), keep "
            f"max_grad_norm > 0, use init='normal', or train in fp32 (bf16=false). Last good checkpoint: {good}."
        )

    final = trainer.evaluate()
    trainer.save_state()
    _save_final(trainer, tokenizer, out)
    state = trainer.state
    runtime = train_output.metrics.get("train_runtime", 0.0)
    metrics = {
        "eval_loss": final["eval_loss"],
        "eval_perplexity": final["eval_perplexity"],
        "eval_bits_per_byte": final["eval_bits_per_byte"],
        "train_loss": train_output.training_loss,
        "train_steps": state.global_step,
        "world_size": args.world_size,
        "global_batch_size": micro_batch * accumulation * args.world_size,
        "tokens_seen": int(state.num_input_tokens_seen),
        "train_tokens_per_s": state.num_input_tokens_seen / runtime if runtime else 0.0,
        "train_runtime_s": runtime,
        "wall_time_s": time.perf_counter() - wall_start,
        "peak_memory_mb": _peak_memory_mb(),
        "parameters": count_parameters(model).total,
    }
    if trainer.is_world_process_zero():
        _write_samples(model, tokenizer, cfg, out / "samples.md")
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.log_history))
        _plot_losses(state.log_history, out / "loss.png")
        resolved = {**asdict(cfg), "output_dir": str(out), "model_config": model_config.to_dict()}
        atomic_write_json(out / "run.json", {"config": resolved, "versions": _versions(), "metrics": metrics})
    return PretrainResult(model=model, tokenizer=tokenizer, output_dir=out, metrics=metrics)
