"""pretrain(): one call from text to a trained, evaluated, shareable model, driven by HF Trainer."""

from __future__ import annotations

import atexit
import errno
import functools
import logging
import os
import resource
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import LlamaConfig, PreTrainedModel, TrainerCallback

from . import run_dir
from .artifacts import describe_run, save_final, write_run_record, write_samples
from .budget import (
    StopOnSignal,
    TimeBudget,
    TrainingClock,
    TrainingInterrupted,
    budget_settings,
    parse_duration,
)
from .card import refresh_model_card
from .collate import causal_collator
from .config import DEFAULT_CONTEXT, PRESETS, make_llama_config
from .evaluate import STORY_METRICS
from .model import build_model, count_parameters
from .pretrain_config import PretrainConfig, field_defaults
from .run_data import load_texts, make_tokenizer, training_rows
from .trainer import (
    DivergenceGuard,
    PretrainTrainer,
    TrainingDivergedError,
    check_checkpoint,
    check_resume_matches,
    checkpoint_marker,
    last_complete_checkpoint,
    load_finished,
)

logger = logging.getLogger("tinypretrain")

# The default step on CUDA: the 64x512 shape of the H200 measurements in benchmarks/RESULTS.md (smaller steps leave
# the GPU waiting on Python); on CPU, 8 blocks per step reached the seed's loss fastest.
CUDA_TOKENS_PER_STEP = 32_768
CPU_BLOCKS_PER_STEP = 8
UNBOUNDED_STEPS = 10**9  # a time-budgeted run's step limit: the clock stops it first


@dataclass
class PretrainResult:
    """What ``pretrain()`` produced: the trained model and tokenizer, where they are, and the run's metrics."""

    model: PreTrainedModel
    tokenizer: Any
    output_dir: Path
    metrics: dict[str, float]


def pretrain(
    config: PretrainConfig | None = None, *, callbacks: list[TrainerCallback] | None = None, **overrides: Any
) -> PretrainResult:
    """Train a tiny LLaMA from text and write a shareable run folder; returns the model, tokenizer and metrics.

    ``config`` fields can be overridden by keyword (``pretrain(max_steps=100)``, ``pretrain(cfg, recipe="seed")``).
    The run folder holds the final model and tokenizer (safetensors, loadable by ``AutoModelForCausalLM``/
    ``AutoTokenizer`` without tinypretrain), ``run.json`` (config, versions, metrics), ``metrics.jsonl``, ``loss.png``,
    ``samples.md`` and resumable checkpoints. ``callbacks`` are extra ``TrainerCallback``s (logging, timing, early
    stopping). With ``max_time``, fields left at their defaults take the budget's settings (``budget_settings``).
    Raises ``TrainingDivergedError`` on a NaN/inf loss, keeping the last good checkpoint, and
    ``TrainingInterrupted`` after SIGTERM/SIGINT, once a checkpoint to resume from is saved.
    """
    cfg = config.updated(**overrides) if config else PretrainConfig.from_dict(overrides)
    if cfg.max_time is not None:  # budget-aware settings for the fields left at their defaults
        defaults = field_defaults()
        chosen = budget_settings(on_cpu=not torch.cuda.is_available())
        cfg = cfg.updated(**{k: v for k, v in chosen.items() if getattr(cfg, k) == defaults[k]})
    wall_start = time.perf_counter()
    # Joins the process group of torchrun / accelerate launch (gloo on CPU); trivial for one process.
    state = PartialState(cpu=cfg.use_cpu)
    if state.use_distributed:
        _destroy_process_group_at_exit()
    out = run_dir.run_folder(cfg.output_dir, state)
    with ExitStack() as stack:
        if state.is_main_process:  # one writer per folder, for the whole run
            stack.enter_context(run_dir.locked(out))
        finished = False
        try:
            result = _run(cfg, out, state, callbacks or [], wall_start)
            finished = True
            return result
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            # The write that failed may be elsewhere (the datasets cache); name its disk when the error says.
            failed = Path(err.filename or out).resolve()
            where = next(p for p in (failed, *failed.parents) if p.exists())
            raise OSError(
                errno.ENOSPC,
                f"The disk holding {where} is full ({shutil.disk_usage(where).free // 2**20} MiB free). The last "
                f"complete checkpoint is {last_complete_checkpoint(out)}: free space, then resume with "
                "--resume_from_checkpoint true",
            ) from None
        finally:
            if not finished and state.is_main_process and last_complete_checkpoint(out) is None:
                run_dir.undo_replacement(out)  # the new run failed with nothing to keep: put the old one back


def _run(
    cfg: PretrainConfig, out: Path, state: PartialState, callbacks: list[TrainerCallback], wall_start: float
) -> PretrainResult:
    with state.main_process_first():  # rank 0 checks the folder and fills the datasets cache; the others reuse it
        if state.is_main_process:
            run_dir.prepare(out, resume=bool(cfg.resume_from_checkpoint), overwrite=cfg.overwrite_output_dir)
        checkpoint = _resolve_checkpoint(cfg, out)
        texts = load_texts(cfg)
        tokenizer = make_tokenizer(cfg, texts.train, checkpoint)
        model_config = _model_config(cfg, tokenizer)
        train_rows = training_rows(cfg, texts.train, tokenizer)
    model = build_model(model_config, init=cfg.init, seed=cfg.seed)
    if state.is_main_process:
        logger.info("Model:\n%s", count_parameters(model))

    args = cfg.updated(output_dir=str(out), **device_training_args(cfg), **_budget_training_args(cfg))
    layout = _layout(args, model_config, tokenizer)
    budget_s = parse_duration(cfg.max_time) if cfg.max_time is not None else None
    guard, clock, stop_on_signal = DivergenceGuard(), TrainingClock(), StopOnSignal()
    nothing_left = False
    if checkpoint is not None:
        if not cfg.allow_resume_changes:
            check_resume_matches(checkpoint, layout)
        marker = checkpoint_marker(checkpoint)
        clock.spent_before = marker.get("train_seconds", 0.0)  # a budget counts the time already spent
        # A checkpoint at the end of the run (a kill during the final save): complete the artifacts, train nothing.
        nothing_left = (0 < args.max_steps <= marker["step"]) or (budget_s is not None and clock.spent_before >= budget_s)
    with _tensorboard_dir(cfg.logging_dir):
        trainer = PretrainTrainer(
            model=model,
            args=args,
            train_dataset=train_rows,
            eval_dataset=Dataset.from_dict({"text": texts.eval}),
            data_collator=causal_collator(
                tokenizer,  # pads with the tokenizer's pad id, else its EOS
                document_eos_token_id=tokenizer.eos_token_id if cfg.packing == "pack_documents" else None,
            ),
            processing_class=tokenizer,
            callbacks=[guard, stop_on_signal, *_time_budget(cfg, clock, budget_s), *callbacks],
            loss_chunk_size=cfg.loss_chunk_size,
            clock=clock,
            budget_s=budget_s,
            layout=layout,
        )
    if nothing_left:
        train_output = load_finished(trainer, checkpoint)
    else:
        with stop_on_signal.installed():
            train_output = trainer.train(resume_from_checkpoint=checkpoint)
    if guard.bad_step is not None:
        raise TrainingDivergedError(
            f"Loss became NaN/inf at step {guard.bad_step}. Lower learning_rate (now {cfg.learning_rate}), keep "
            f"max_grad_norm > 0, use init='normal', or train in fp32 (bf16=false). Last good checkpoint: "
            f"{last_complete_checkpoint(out)}."
        )
    if stop_on_signal.received is not None:
        signal_ = stop_on_signal.received
        raise TrainingInterrupted(signal_.name, trainer.state.global_step, 128 + signal_.value)

    history = trainer.state.log_history
    # The evaluation at the last step, unless the schedule already ran it there.
    final = next((h for h in history[::-1] if "eval_loss" in h and h.get("step") == trainer.state.global_step), None)
    final = final or trainer.evaluate()
    trainer.save_state()
    save_final(trainer, tokenizer, out)
    if state.is_main_process:
        run_dir.finish_replacement(out)
    runtime = train_output.metrics.get("train_runtime", 0.0)
    tokens = int(trainer.state.num_input_tokens_seen)
    micro_batch = args.per_device_train_batch_size
    metrics = {
        "eval_loss": final["eval_loss"],
        "eval_perplexity": final["eval_perplexity"],
        "eval_bits_per_byte": final["eval_bits_per_byte"],
        "train_loss": train_output.training_loss,
        "train_steps": trainer.state.global_step,
        "world_size": args.world_size,
        "global_batch_size": micro_batch * args.gradient_accumulation_steps * args.world_size,
        "tokens_seen": tokens,
        "train_tokens_per_s": tokens / runtime if runtime else 0.0,
        "train_runtime_s": runtime,
        "train_seconds": clock.seconds(),
        "wall_time_s": time.perf_counter() - wall_start,
        "peak_memory_mb": _peak_memory_mb(),
        "parameters": count_parameters(model).total,
        **{name: value for name, value in final.items() if name.removeprefix("eval_") in STORY_METRICS},
    }
    if trainer.is_world_process_zero():
        sample_tokens = min(200, cfg.max_length)
        samples = write_samples(model, tokenizer, cfg.num_samples, sample_tokens, cfg.seed, out / "samples.md")
        resolved = {**args.to_dict(), "model_config": model_config.to_dict()}
        description = {**describe_run(cfg, args, model, tokenizer, texts, train_rows), "samples": samples}
        write_run_record(out, resolved, metrics, history, description)
        refresh_model_card(out)
    return PretrainResult(model=model, tokenizer=tokenizer, output_dir=out, metrics=metrics)


def _layout(args: PretrainConfig, model_config: LlamaConfig, tokenizer: Any) -> dict[str, Any]:
    """What must not change between a checkpoint and its resume."""
    shape = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
             "vocab_size", "tie_word_embeddings")
    return {
        **{name: getattr(model_config, name) for name in shape},
        "tokenizer_size": len(tokenizer),
        "max_length": args.max_length,
        "packing": args.packing,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "world_size": args.world_size,
    }


def device_training_args(cfg: PretrainConfig) -> dict[str, Any]:
    """The TrainingArguments a run resolves for its device: what each ``None`` field becomes, and how tokens are
    counted and batches copied."""
    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    batch = cfg.per_device_train_batch_size
    if batch is None:
        batch = max(CPU_BLOCKS_PER_STEP, CUDA_TOKENS_PER_STEP // cfg.max_length) if cuda else CPU_BLOCKS_PER_STEP
    accelerator_config = {**cfg.accelerator_config.to_dict(), "non_blocking": cuda and cfg.avoid_host_syncs}
    return {
        "per_device_train_batch_size": batch,
        "bf16": bf16,
        "fp16": bool(cfg.fp16 or (cuda and not bf16 and cfg.bf16 is None)),
        "torch_compile": cfg.torch_compile if cfg.torch_compile is not None else cuda,
        "accelerator_config": accelerator_config,
        "include_num_input_tokens_seen": "no" if cfg.avoid_host_syncs else "non_padding",
    }


def _time_fraction(every: float | None) -> float | None:
    return every if every is not None and 0 < every < 1 else None


def _budget_training_args(cfg: PretrainConfig) -> dict[str, Any]:
    """With max_time, the clock ends training (max_steps only if set) and fractional eval/save points are fractions
    of the time, so Trainer's step-based ones are turned off."""
    if cfg.max_time is None:
        return {}
    args: dict[str, Any] = {"max_steps": cfg.max_steps if cfg.max_steps > 0 else UNBOUNDED_STEPS}
    if _time_fraction(cfg.eval_steps):
        args["eval_strategy"] = "no"
    if _time_fraction(cfg.save_steps):
        args["save_strategy"] = "no"
    return args


def _time_budget(cfg: PretrainConfig, clock: TrainingClock, budget_s: float | None) -> list[TimeBudget]:
    if budget_s is None:
        return []
    return [TimeBudget(clock, budget_s, _time_fraction(cfg.eval_steps), _time_fraction(cfg.save_steps))]


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
    check_checkpoint(checkpoint)
    return str(checkpoint)


def _model_config(cfg: PretrainConfig, tokenizer: Any) -> LlamaConfig:
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
    return config


@contextmanager
def _tensorboard_dir(logging_dir: str | None):
    """Point transformers' TensorBoardCallback (which reads TENSORBOARD_LOGGING_DIR when built) at logging_dir."""
    previous = os.environ.get("TENSORBOARD_LOGGING_DIR")
    if logging_dir is not None:
        os.environ["TENSORBOARD_LOGGING_DIR"] = logging_dir
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = previous


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
