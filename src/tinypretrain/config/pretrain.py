"""PretrainConfig: every option of a run, declared once, for Python, the CLI and YAML/JSON files alike.

Like TRL's ``SFTConfig`` it *is* a ``TrainingArguments``: it adds the data, tokenizer and model fields, re-declares
only the Trainer defaults it changes, and leaves every other Trainer option reachable by its own name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import TrainingArguments

from .budget import TIME_SCHEDULES, budget_settings, parse_duration
from .fields import choices as choices_of
from .fields import coerce, documented, read_config_file
from .llama import PRESETS, unknown_model_fields
from .recipes import RECIPES


@dataclass
class PretrainConfig(TrainingArguments):
    """Everything a run needs: data, tokenizer, model and every ``TrainingArguments`` option.

    Each field is resolved once, in this order: a value you give (a keyword, a CLI flag, a YAML/JSON key) > the
    ``recipe`` > the time budget (``max_time``) > the device (fields left at ``None``: bf16, ``torch.compile`` and a
    32k-token step on CUDA; 8 blocks per step on CPU, in bf16 on CPUs with bf16 matrix instructions (AMX, AVX-512
    BF16), compiled there for budgets of 300 s or more, after a first eager minute, else fp32 and eager; compiled
    runs drop each epoch's smaller last batch) > the library default. A value you give wins even when it equals the
    default; a field given as ``None`` is unset. ``sources`` says where each value came from; ``resolve_settings``
    adds the device's. ``dataclasses.replace`` copies every field, so each counts as given: use ``updated`` to keep
    sources.
    """

    COMMAND = "train"  # the CLI command that trains this kind of config, for messages

    def __new__(cls, *args: Any, **kwargs: Any) -> PretrainConfig:
        # The dataclass __init__ cannot tell a value given from a default; what the caller passed can.
        self = super().__new__(cls)
        names = [f.name for f in fields(cls) if f.init]
        self._given = frozenset(names[: len(args)]) | frozenset(kwargs)
        return self

    recipe: Literal["seed", "fast"] | None = documented(
        "'seed' (the blog's exact settings) or 'fast' (its model and data, our settings). A recipe sets every field "
        "you do not set yourself.",
        default=None,
    )
    # data
    dataset: str | None = documented("Hub name or local path; None = the built-in story generator.", default=None)
    train_split: str = documented("Training split (slices allowed, e.g. train[:10%%]).", default="train")
    eval_split: str | None = documented(
        "Eval split; if the source lacks it, eval_size texts are held out of train.", default="validation"
    )
    text_column: str = documented("Column holding the texts.", default="text")
    max_train_samples: int | None = documented("Use at most this many training texts.", default=None)
    max_eval_samples: int | None = documented("Evaluate on at most this many texts (None = all).", default=500)
    eval_size: int = documented("Texts held out for eval when the source has no eval split.", default=500)
    builtin_stories: int = documented("Stories generated when dataset is None.", default=12000)
    max_length: int = documented("Block length (packing) or most tokens per story (truncate).", default=256)
    packing: Literal["pack", "pack_documents", "truncate"] = documented(
        "'pack' = fixed blocks, no padding; 'pack_documents' = the same, but each text attends only to itself "
        "(position ids restart at EOS); 'truncate' = the seed's padded stories.",
        default="pack",
    )
    num_proc: int | None = documented(
        "Processes for tokenization (datasets.map); None = one per core (up to 8) from 100,000 texts on, else one.",
        default=None,
    )
    streaming: bool = documented(
        "Stream the corpus instead of caching it (needs a dataset, max_steps and packing); checkpoints save the "
        "stream's position.", default=False
    )
    # tokenizer
    tokenizer: str | None = documented("Hub name or path; None = train a byte-level BPE on the data.", default=None)
    vocab_size: int = documented("Vocabulary of the tokenizer trained when tokenizer is None.", default=4096)
    # model
    preset: str = documented("Model shape; see tinypretrain.list_presets().", default="cpu-2m")
    model_overrides: dict | str | None = documented(
        "make_llama_config fields as a dict or JSON, e.g. '{\"hidden_size\": 192}'.", default=None
    )
    # Kaiming and a constant rate after warmup each beat HF-normal init and cosine decay in equal-step CPU
    # ablations, and together most (-0.38 nats at 192 steps; benchmarks/RESULTS.md, runs 3-6).
    init: Literal["kaiming", "normal"] = documented("'kaiming' (the seed's) or 'normal' (HF, std 0.02).", default="kaiming")
    qk_norm: bool = documented(
        "RMSNorm on each head's queries and keys before RoPE (QK-norm). The model is then transformers' Qwen3 "
        "architecture (Llama plus QK-norm): a plain HF model, not a Llama one (GGUF export refuses it).",
        default=False,
    )
    attn_implementation: Literal["eager", "sdpa", "sdpa_fp32"] | None = documented(
        "How attention is computed: 'eager' (matmuls and a softmax), 'sdpa' (torch's fused kernel) or 'sdpa_fp32' "
        "(the fused kernel in fp32 under bf16 autocast: faster on CPU); None = transformers' default, 'sdpa'. "
        "Numerics only: the saved model loads either way.",
        default=None,
    )
    # On by evidence: 0.94 (60 s) and 0.968 (300 s) of the old default's bits/byte, p < 0.03, 3 seeds each
    # (benchmarks/RESULTS.md, section 16).
    zero_init_projections: bool = documented(
        "Start each block's output projections (o_proj, down_proj) at zero, as the modded-nanogpt speedruns do: every "
        "block begins as the identity. The saved model is a plain HF Llama.",
        default=True,
    )
    residual_dropout: float = documented(
        "Dropout on each block's attention and MLP outputs before they join the residual stream (nanoGPT's "
        "resid_dropout), while training only: a regulariser for runs that pass over their data many times (0.1 was "
        "worse at 300 s on CPU: benchmarks/RESULTS.md section 46). The saved model is a plain HF Llama.",
        default=0.0,
    )
    # run folder and speed levers
    overwrite_output_dir: bool = documented("Replace an existing run in output_dir.", default=False)
    avoid_host_syncs: bool = documented(
        "Count tokens without a per-step GPU->CPU sync and copy batches asynchronously from pinned memory; "
        "false = Trainer's stock behaviour.",
        default=True,
    )
    loss_chunk_size: int | None = documented(
        "Compute lm_head+CE in chunks of this many tokens, with their gradients made in the forward pass: the full "
        "logits never exist, and a CPU step is faster. 0 = transformers' loss over all logits; None = the device's "
        "choice (512 for a CPU's eager steps, else 0).", default=None
    )
    num_samples: int = documented("Stories written to samples.md.", default=4)
    story_samples: int = documented(
        "Continuations of eval-story openings sampled at each evaluation for the story metrics (eval_eos_rate, "
        "eval_repeat_4gram, eval_distinct_2, eval_name_consistency, eval_mean_words); 0 = none.",
        default=16,
    )
    story_max_new_tokens: int = documented(
        "Token limit of each story-metric continuation: one that has not ended by then counts as not ending.",
        default=256,
    )
    license: str = documented("License of the trained model, for its model card (a hub license id).", default="apache-2.0")
    allow_resume_changes: bool = documented(
        "Resume even if the model, tokenizer, max_length, batch layout or bf16 differ from the checkpoint's.",
        default=False,
    )
    muon: bool = documented(
        "Muon (torch.optim.Muon) for the hidden 2-D matrices and AdamW for embeddings, head and norms, as in the "
        "modded-nanogpt speedruns; one learning_rate for both. Replaces optim.",
        default=False,
    )
    embedding_lr: float | None = documented(
        "Peak learning rate of the input embeddings; None = learning_rate. The schedule scales it like the others.",
        default=None,
    )
    head_lr: float | None = documented(
        "Peak learning rate of the lm_head (untied); None = learning_rate. With tied embeddings, embedding_lr rules.",
        default=None,
    )
    max_time: str | None = documented(
        "Training-time budget: seconds or a duration such as '90s', '10m', '2h'. Training stops at the deadline (or at "
        "max_steps, if set and reached first); the learning rate, warmup, evaluations and saves follow the clock.",
        default=None,
    )
    decay_fraction: float = documented(
        "With lr_scheduler_type='warmup_stable_decay': the final fraction of the run (of its time with max_time, "
        "else of its steps) over which the rate decays linearly to 0.",
        default=0.2,
    )
    verbose: bool = documented("Log the per-tensor parameter table (otherwise one summary line).", default=False)
    peak_flops: float | None = documented(
        "Peak FLOP/s of one device, for the MFU in run.json (measure a CPU's with benchmarks/cpu_peak.py); None = "
        "the data sheet of a known GPU, else no MFU.",
        default=None,
    )
    logging_dir: str | None = documented(
        "Folder for TensorBoard event files (with report_to tensorboard); None = output_dir/runs/<time>.",
        default=None,
    )

    # TrainingArguments whose defaults we change; every other one keeps Trainer's default.
    output_dir: str | None = documented("Run folder; None = runs/run-<timestamp>.", default=None)
    num_train_epochs: float = documented("Passes over the training data (max_steps > 0 overrides).", default=1.0)
    per_device_train_batch_size: int | None = documented(
        "Blocks per device per step; None = 8 on CPU, 32,768 tokens' worth on CUDA.", default=None
    )
    learning_rate: float = documented("Peak learning rate (AdamW).", default=2e-3)
    lr_scheduler_type: str = documented(
        "Any Trainer schedule, e.g. 'cosine' (the seed's).", default="constant_with_warmup"
    )
    warmup_steps: float = documented("Warmup steps, or a fraction of all steps when < 1.", default=0.05)
    weight_decay: float = documented("AdamW weight decay.", default=0.1)
    adam_beta2: float = documented("AdamW beta2.", default=0.95)
    seed: int = documented("Seed of the data order, the init and sampling.", default=3407)
    logging_steps: float = documented("Log the training loss every N steps.", default=10)
    eval_strategy: str = documented("When to evaluate: 'steps' (every eval_steps) or 'no'.", default="steps")
    eval_steps: float | None = documented("Evaluate every N steps, or a fraction of all steps when < 1.", default=0.2)
    save_steps: float = documented("Checkpoint every N steps, or a fraction of all steps when < 1.", default=0.2)
    save_total_limit: int | None = documented("Checkpoints kept (oldest deleted first).", default=2)
    report_to: None | str | list[str] = documented(
        "Loggers: 'none', 'tensorboard', 'wandb', ... (see TrainingArguments).", default="none"
    )
    bf16: bool | None = documented(
        "bf16 mixed precision; None = on where CUDA supports it and on CPUs with bf16 matrix instructions (amx_bf16, "
        "avx512_bf16).", default=None
    )
    torch_compile: bool | None = documented(
        "torch.compile the model; None = on with CUDA, and on CPUs with bf16 matrix instructions in bf16 for a "
        "max_time of 300 s or more; off otherwise.", default=None
    )
    torch_compile_after: float | None = documented(
        "With torch_compile, train eagerly for this many seconds of training, then compile the model in place: the "
        "first steps and losses do not wait for the compiler; 0 = compile before the first step; None = 60 where a "
        "budget run on a CPU with bf16 matrix instructions is compiled, else 0. A value turns torch_compile on "
        "unless you set it.",
        default=None,
    )
    dataloader_drop_last: bool | None = documented(
        "Drop each epoch's last, smaller batch; None = on where the model is compiled (a smaller batch makes "
        "torch.compile recompile it: 14 s on an H200) and off otherwise.", default=None
    )
    logging_nan_inf_filter: bool = documented(
        "Drop NaN/inf losses from logs. Off, so that pretrain() sees a divergence and stops.", default=False
    )
    resume_from_checkpoint: str | None = documented(
        "A checkpoint path, or true to continue from output_dir's last complete one.", default=None
    )

    def __post_init__(self) -> None:
        self._apply_layers()
        self.model_overrides = _as_dict(self.model_overrides, "model_overrides")
        if isinstance(self.resume_from_checkpoint, str):
            flag = self.resume_from_checkpoint.lower()
            if flag in ("true", "last"):
                self.resume_from_checkpoint = True
            elif flag in ("false", ""):
                self.resume_from_checkpoint = None
        problems = self._problems()
        if problems:
            raise ValueError(f"Invalid {type(self).__name__}: " + "; ".join(problems) + ".")
        # Set before TrainingArguments creates the process state, so multi-process CPU runs use gloo.
        self.use_cpu = self.use_cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available())
        if self.fsdp and self.use_cpu:  # accelerate turns FSDP on only for accelerators: on CPU it would be DDP
            raise ValueError(f"Invalid {type(self).__name__}: fsdp shards the model over GPUs, and accelerate enables "
                             "it only there (on CPU the run would silently train with DDP); drop fsdp on CPU.")
        auto_output_dir = self.output_dir is None
        super().__post_init__()
        if auto_output_dir:  # TrainingArguments says "trainer_output"; pretrain() names a fresh run folder instead
            self.output_dir = None

    def _apply_layers(self) -> None:
        """Fill each field not given from the layers, first that has it wins; record every field's source."""
        layers = self._layers()
        self.sources = {}
        for name in (f.name for f in fields(self) if f.init):
            if name in self._given:
                self.sources[name] = "explicit"
                continue
            source, values = next(((s, v) for s, v in layers if name in v), ("default", {}))
            if name in values:
                setattr(self, name, values[name])
            self.sources[name] = source

    def _layers(self) -> list[tuple[str, dict[str, Any]]]:
        """The layers between a given value and the default, in order: the recipe, then the time budget."""
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"Unknown recipe {self.recipe!r}; choose one of {sorted(RECIPES)}.")
        layers = [(f"recipe:{self.recipe}", RECIPES.get(self.recipe, {}))]
        if self.max_time is not None:
            layers.append(("budget", budget_settings(on_cpu=not torch.cuda.is_available())))
        return layers

    @property
    def given(self) -> frozenset[str]:
        """The fields given (keywords, flags, file keys), not filled by a recipe, the budget or a default."""
        return self._given

    def _problems(self) -> list[str]:
        problems = []
        for name in ("packing", "init"):  # an unknown recipe has already failed in _apply_recipe
            choices = choices_of(type(self), name)
            if getattr(self, name) not in choices:
                allowed = ", ".join(repr(c) for c in choices if c is not None)
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        problems += unknown_model_fields(self.model_overrides)
        if self.preset not in PRESETS:
            problems.append(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.max_length < 2:
            problems.append(f"max_length must be >= 2, got {self.max_length}")
        positive = ("per_device_train_batch_size", "gradient_accumulation_steps", "builtin_stories", "vocab_size",
                    "story_max_new_tokens")
        for name in (*positive, "eval_size", "max_train_samples", "max_eval_samples", "num_proc"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1, got {value}")
        non_negative = ("learning_rate", "weight_decay", "warmup_steps", "num_train_epochs", "max_grad_norm")
        for name in (*non_negative, "eval_steps", "save_steps", "logging_steps", "num_samples", "story_samples",
                     "loss_chunk_size"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                problems.append(f"{name} must be >= 0, got {value}")
        if self.max_time is not None:
            try:
                parse_duration(self.max_time)
            except ValueError as err:
                problems.append(str(err))
            if self.lr_scheduler_type not in TIME_SCHEDULES:
                problems.append(f"with max_time, lr_scheduler_type must be one of {', '.join(TIME_SCHEDULES)}")
        if not is_license_id(self.license):
            problems.append(f"license must be a hub license id such as apache-2.0, mit or other, got {self.license!r}")
        if not 0 <= self.residual_dropout < 1:
            problems.append(f"residual_dropout must be at least 0 and below 1, got {self.residual_dropout}")
        if not 0 <= self.decay_fraction <= 1:
            problems.append(f"decay_fraction must be between 0 and 1, got {self.decay_fraction}")
        for name in ("torch_compile_mode", "torch_compile_after"):
            if self.torch_compile is False and getattr(self, name) is not None:
                problems.append(f"{name} needs torch_compile (leave torch_compile unset or true)")
        if self.torch_compile_after is not None and not self.torch_compile_after >= 0:
            problems.append(f"torch_compile_after must be >= 0 seconds, got {self.torch_compile_after}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0 and self.max_time is None:
            problems.append("set num_train_epochs > 0 or max_steps > 0")
        if self.streaming and (self.max_steps <= 0 or self.packing == "truncate" or self.dataset is None):
            problems.append("streaming needs a dataset, max_steps > 0 (a stream has no length) and packing")
        if self.streaming and self.dataloader_num_workers > 0:
            problems.append("streaming reads the stream in the training process, so that a resume starts exactly "
                            "where the checkpoint was; set dataloader_num_workers=0")
        return problems

    def to_fields(self) -> dict[str, Any]:
        """Every constructor field and its current value, enums as their values (tokens kept, unlike ``to_dict()``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        return {name: value.value if isinstance(value, Enum) else value for name, value in values.items()}

    @property
    def global_batch_size(self) -> int:
        """Rows per optimizer step over all processes: micro-batch x accumulation x world size."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.world_size

    def updated(self, **changes: Any) -> PretrainConfig:
        """A copy with ``changes`` given on top of this config's given fields, validated like any new config (unknown
        names are an error); the recipe, budget and defaults fill the rest again, so sources stay true."""
        given = {name: value for name, value in self.to_fields().items() if name in self._given}
        return type(self).from_dict({**given, **changes}, source="overrides")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "arguments") -> PretrainConfig:
        """Build from a mapping: unknown keys are an error listing the valid ones, and text values such as YAML's
        ``1e-3`` are converted to the field's type (or rejected with the field's name)."""
        names = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"Unknown {cls.__name__} key(s) {unknown} in {source}; see `tinypretrain {cls.COMMAND} --help` for valid keys."
            )
        return cls(**{name: coerce(cls, name, value) for name, value in data.items()})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> PretrainConfig:
        """Load a YAML or JSON file of fields, then apply ``overrides``."""
        return cls.from_dict({**read_config_file(path), **overrides}, source=str(path))


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


def is_license_id(value: object) -> bool:
    """Whether ``value`` is a hub license id in form (apache-2.0, mit, other): the hub refuses cards with others."""
    return isinstance(value, str) and re.fullmatch(r"[a-z0-9][a-z0-9.-]*", value) is not None

