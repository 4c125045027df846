"""pretrain(): one call from text to a trained, evaluated, shareable model, driven by HF Trainer."""

from __future__ import annotations

import atexit
import errno
import functools
import json
import logging
import os
import resource
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import LlamaConfig, PreTrainedModel, TrainerCallback

from . import run_dir
from .artifacts import describe_run, run_metrics, save_final, write_run_record, write_samples
from .budget import (
    OverheadAllowance,
    RankAgreement,
    StopOnSignal,
    TimeBudget,
    TrainingClock,
    TrainingInterrupted,
    parse_duration,
)
from .card import refresh_model_card
from .collate import causal_collator
from .compute import compute_record, flops_per_token
from .config import DEFAULT_CONTEXT, PRESETS, make_llama_config
from .model import build_model, count_parameters
from .pretrain_config import PretrainConfig
from .run_data import load_texts, make_tokenizer, training_rows
from .settings import resolve_settings, settings_fingerprint, training_settings
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

UNBOUNDED_STEPS = 10**9  # what Trainer is told of a time-budgeted run's steps (the clock stops it); never recorded


@dataclass
class PretrainResult:
    """What ``pretrain()`` produced: the trained model and tokenizer, where they are, and the run's metrics."""

    model: PreTrainedModel
    tokenizer: Any
    output_dir: Path
    metrics: dict[str, float]
    already_complete: bool = False  # a finished run was resumed: nothing was trained or written


def pretrain(
    config: PretrainConfig | None = None, *, callbacks: list[TrainerCallback] | None = None, **overrides: Any
) -> PretrainResult:
    """Train a tiny LLaMA from text and write a shareable run folder; returns the model, tokenizer and metrics.

    ``config`` fields can be overridden by keyword (``pretrain(max_steps=100)``, ``pretrain(cfg, recipe="seed")``);
    settings are resolved once (``PretrainConfig``: given > recipe > budget > device > default) and recorded with
    their sources. The run folder holds the final model and tokenizer (safetensors, loadable by
    ``AutoModelForCausalLM``/``AutoTokenizer`` without tinypretrain), ``run.json`` (settings, sources, versions,
    metrics, compute), ``metrics.jsonl``, ``loss.png``, ``samples.md`` and resumable checkpoints. ``callbacks`` are
    extra ``TrainerCallback``s. Resuming a finished run changes nothing and returns it. Raises
    ``TrainingDivergedError`` on a NaN/inf loss, keeping the last good checkpoint, and ``TrainingInterrupted`` after
    SIGTERM/SIGINT, once a checkpoint to resume from is saved.
    """
    cfg = resolve_settings(config.updated(**overrides) if config else PretrainConfig.from_dict(overrides))
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
            result = _run(cfg, out, state, callbacks or [])
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


def _run(cfg: PretrainConfig, out: Path, state: PartialState, callbacks: list[TrainerCallback]) -> PretrainResult:
    clock = TrainingClock()
    budget_s = parse_duration(cfg.max_time) if cfg.max_time is not None else None
    with state.main_process_first():  # rank 0 checks the folder and fills the datasets cache; the others reuse it
        if state.is_main_process:
            run_dir.prepare(out, resume=bool(cfg.resume_from_checkpoint), overwrite=cfg.overwrite_output_dir)
        checkpoint = _resolve_checkpoint(cfg, out)
        nothing_left = checkpoint is not None and _trained_to_the_end(cfg, checkpoint, budget_s)
        if nothing_left and (out / "run.json").exists():
            return _already_complete(out)
        texts = load_texts(cfg)
        tokenizer = make_tokenizer(cfg, texts.train, checkpoint)
        model_config = _model_config(cfg, tokenizer)
        train_rows = training_rows(cfg, texts.train, tokenizer)
    model = build_model(model_config, init=cfg.init, seed=cfg.seed)
    params = count_parameters(model)
    if state.is_main_process:
        logger.info("Model: %s", params if cfg.verbose else params.summary())

    layout = _layout(cfg, model_config, tokenizer)
    if checkpoint is not None:
        if not cfg.allow_resume_changes:
            check_resume_matches(checkpoint, layout)
        marker = checkpoint_marker(checkpoint)
        clock.spent_before, clock.wall_before = marker["train_seconds"], marker["wall_seconds"]
    agreement = RankAgreement(clock)
    guard, stop_on_signal = DivergenceGuard(), StopOnSignal(agreement)
    allowance = _overhead_allowance(cfg, clock, budget_s)
    with stop_on_signal.installed():  # from the first step to the last write
        with _tensorboard_dir(cfg.logging_dir):
            trainer = PretrainTrainer(
                model=model,
                args=_trainer_args(cfg, out),
                train_dataset=train_rows,
                eval_dataset=Dataset.from_dict({"text": texts.eval}),
                data_collator=causal_collator(
                    tokenizer,  # pads with the tokenizer's pad id, else its EOS
                    document_eos_token_id=tokenizer.eos_token_id if cfg.packing == "pack_documents" else None,
                ),
                processing_class=tokenizer,
                callbacks=[guard, stop_on_signal, *_time_budget(cfg, clock, budget_s, allowance, agreement),
                           *callbacks],
                loss_chunk_size=cfg.loss_chunk_size,
                clock=clock,
                budget_s=budget_s,
                layout=layout,
                allowance=allowance,
            )
        if nothing_left:  # a checkpoint at the end of the run (a kill during the final save): complete the artifacts
            train_output = load_finished(trainer, checkpoint)
        else:
            train_output = trainer.train(resume_from_checkpoint=checkpoint)
        if guard.bad_step is not None:
            raise TrainingDivergedError(
                f"Loss became NaN/inf at step {guard.bad_step}. Lower learning_rate (now {cfg.learning_rate}), keep "
                f"max_grad_norm > 0, use init='normal', or train in fp32 (bf16=false). Last good checkpoint: "
                f"{last_complete_checkpoint(out)}."
            )
        step = trainer.state.global_step
        if stop_on_signal.received is not None:
            signal_ = stop_on_signal.received
            raise TrainingInterrupted(f"stopped by {signal_.name} at step {step}",
                                      "resume with --resume_from_checkpoint true", 128 + signal_.value)
        stop_on_signal.finishing(
            f"the last complete checkpoint is {last_complete_checkpoint(out)}: resume with --resume_from_checkpoint "
            "true to write the final model"
        )
        result = _finish(cfg, out, state, trainer, train_output, tokenizer, texts, train_rows)
    if stop_on_signal.received is not None:
        signal_ = stop_on_signal.received
        raise TrainingInterrupted(f"{signal_.name} received after the last step (step {step})",
                                  f"the run was completed first: {out}", 128 + signal_.value)
    return result


def _finish(cfg: PretrainConfig, out: Path, state: PartialState, trainer: PretrainTrainer, train_output: Any,
            tokenizer: Any, texts: Any, train_rows: Any) -> PretrainResult:
    """The final evaluation, model, samples, run.json and card."""
    model = trainer.model
    # The evaluation at the last step, unless the schedule already ran it there.
    history = trainer.state.log_history
    final = next((h for h in history[::-1] if "eval_loss" in h and h.get("step") == trainer.state.global_step), None)
    final = final or trainer.evaluate()
    trainer.save_state()
    save_final(trainer, tokenizer, out)
    if state.is_main_process:
        run_dir.finish_replacement(out)
    metrics = run_metrics(trainer, final, train_output.training_loss, _peak_memory_mb())
    if trainer.is_world_process_zero():
        sample_tokens = min(200, cfg.max_length)
        samples = write_samples(model, tokenizer, cfg.num_samples, sample_tokens, cfg.seed, out / "samples.md")
        description = {**describe_run(cfg, model, tokenizer, texts, train_rows), "samples": samples,
                       "evaluations": [h["step"] for h in history if "eval_loss" in h],
                       "overhead_skipped": trainer.allowance.skipped if trainer.allowance else None}
        compute = compute_record(flops_per_token(model, cfg.max_length), metrics["tokens_seen"],
                                 metrics["train_seconds"], cfg.peak_flops, description["device"],
                                 description["precision"])
        settings = training_settings(cfg)
        record = {
            "config": {**cfg.to_dict(), "output_dir": str(out), "model_config": model.config.to_dict()},
            "sources": cfg.sources,
            "fingerprint": settings_fingerprint(settings),
            "compute": compute,
        }
        write_run_record(out, record, metrics, trainer.state.log_history, description)
        refresh_model_card(out)
    return PretrainResult(model=model, tokenizer=tokenizer, output_dir=out, metrics=metrics)


def _already_complete(out: Path) -> PretrainResult:
    """A finished run resumed: nothing is trained or written; its model and record are returned as they are."""
    from transformers import AutoModelForCausalLM

    from .tokenizer import load_tokenizer

    metrics = json.loads((out / "run.json").read_text(encoding="utf-8"))["metrics"]
    logger.info("%s is already complete (step %s); nothing to train, nothing written.", out, metrics["train_steps"])
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    return PretrainResult(model=model, tokenizer=load_tokenizer(str(out)), output_dir=out, metrics=metrics,
                          already_complete=True)


def _trained_to_the_end(cfg: PretrainConfig, checkpoint: str, budget_s: float | None) -> bool:
    """Whether ``checkpoint`` ends the run ``cfg`` describes (so resuming trains nothing). A time budget below the
    time already trained is an error, unless it is the budget the checkpoint was trained under."""
    marker = checkpoint_marker(checkpoint)
    step = marker["step"]
    if cfg.max_steps > 0 and step >= cfg.max_steps:
        return True
    if budget_s is not None:
        spent = marker["train_seconds"]
        if budget_s < spent and marker.get("budget_s") != budget_s:
            raise ValueError(
                f"max_time {cfg.max_time} is less than the {spent:.1f} s this run has already trained; pass a larger "
                f"max_time to train on, or the run's own ({marker.get('budget_s')} s) to complete it."
            )
        return spent >= budget_s
    if cfg.max_steps > 0:
        return False
    trained = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return trained["global_step"] >= trained["max_steps"] and trained.get("num_train_epochs") == cfg.num_train_epochs


def _layout(cfg: PretrainConfig, model_config: LlamaConfig, tokenizer: Any) -> dict[str, Any]:
    """What must not change between a checkpoint and its resume."""
    shape = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
             "vocab_size", "tie_word_embeddings")
    return {
        **{name: getattr(model_config, name) for name in shape},
        "tokenizer_size": len(tokenizer),
        "max_length": cfg.max_length,
        "packing": cfg.packing,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "world_size": cfg.world_size,
    }


def _trainer_args(cfg: PretrainConfig, out: Path) -> PretrainConfig:
    """What Trainer is given: the resolved settings in ``out``; with max_time, the clock ends training (max_steps
    only if set) and fractional eval/save points are fractions of the time, so Trainer's step-based ones are off.
    These mechanics never reach run.json, which records the settings."""
    changes: dict[str, Any] = {"output_dir": str(out)}
    if cfg.max_time is not None:
        changes["max_steps"] = cfg.max_steps if cfg.max_steps > 0 else UNBOUNDED_STEPS
        if _time_fraction(cfg.eval_steps):
            changes["eval_strategy"] = "no"
        if _time_fraction(cfg.save_steps):
            changes["save_strategy"] = "no"
    return cfg.updated(**changes)


def _time_fraction(every: float | None) -> float | None:
    return every if every is not None and 0 < every < 1 else None


def _overhead_allowance(cfg: PretrainConfig, clock: TrainingClock, budget_s: float | None) -> OverheadAllowance | None:
    """With a time budget, evaluations and saves during training share 10% of it, unless you set their cadence."""
    if budget_s is None:
        return None
    governed = {kind for kind, name in (("evaluate", "eval_steps"), ("save", "save_steps"))
                if cfg.sources[name] != "explicit"}
    return OverheadAllowance(clock, budget_s, governed) if governed else None


def _time_budget(cfg: PretrainConfig, clock: TrainingClock, budget_s: float | None,
                 allowance: OverheadAllowance | None, agreement: RankAgreement) -> list[TimeBudget]:
    if budget_s is None:
        return []
    return [TimeBudget(clock, budget_s, _time_fraction(cfg.eval_steps), _time_fraction(cfg.save_steps), allowance,
                       agreement)]


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
