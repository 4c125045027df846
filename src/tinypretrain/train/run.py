"""pretrain(): one call from text to a trained, evaluated, shareable model, driven by HF Trainer.

``run()`` is the spine: the steps of a run in order, each one call into its subpackage (settings, run folder and
resume point, data, model, training, records)."""

from __future__ import annotations

import atexit
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, PreTrainedModel, TrainerCallback

from ..config.budget import budget_seconds
from ..config.pretrain import PretrainConfig
from ..config.settings import resolve_settings, settings_fingerprint, training_settings
from ..config.sft import SFTConfig
from ..data.prepare import load_texts, make_tokenizer, training_rows
from ..data.tokenizer import load_tokenizer
from ..model.build import count_parameters, starting_model
from ..model.compute import compute_record, flops_per_token
from ..model.generate import SAMPLING
from . import run_dir
from .card import refresh_model_card
from .checkpoint import (
    last_complete_checkpoint,
    load_finished,
    restore_clock,
    resume_point,
    run_layout,
    trained_to_the_end,
)
from .clock import TrainingClock
from .records import (
    SAMPLE_PROMPTS,
    describe_run,
    peak_memory_mb,
    run_metrics,
    save_final,
    sft_record,
    write_run_record,
    write_samples,
)
from .signals import RankAgreement, StopOnSignal
from .trainer import DivergenceGuard, PretrainTrainer, build_trainer

logger = logging.getLogger("tinypretrain")


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
    with run_dir.claimed(out, main=state.is_main_process):
        run_dir.check_shared(out, state, save_on_each_node=cfg.save_on_each_node)
        return run(cfg, out, state, callbacks or [])


def run(cfg: PretrainConfig, out: Path, state: PartialState, callbacks: list[TrainerCallback]) -> PretrainResult:
    """One run of resolved settings ``cfg`` into the claimed folder ``out``, step by step."""
    clock, budget_s = TrainingClock(), budget_seconds(cfg.max_time)
    # The folder and the resume point. Rank 0 goes first: it checks the folder and fills the datasets cache.
    with state.main_process_first():
        if state.is_main_process:
            run_dir.prepare(out, resume=bool(cfg.resume_from_checkpoint), overwrite=cfg.overwrite_output_dir)
        checkpoint = resume_point(cfg, out)
        nothing_left = checkpoint is not None and trained_to_the_end(cfg, checkpoint, budget_s)
        if nothing_left and (out / "run.json").exists():
            return _already_complete(out)
        # Data: texts, tokenizer, training rows.
        texts = load_texts(cfg)
        tokenizer = make_tokenizer(cfg, texts.train, checkpoint)
        train_rows = training_rows(cfg, texts.train, tokenizer)
        if checkpoint is not None and cfg.streaming and not cfg.ignore_data_skip:
            train_rows.resume(checkpoint)  # at the checkpoint's place in the stream: nothing before it is read again
    # Model.
    model = starting_model(cfg, tokenizer)
    if state.is_main_process:
        logger.info("Model: %s", count_parameters(model).describe(cfg.verbose))
    layout = run_layout(cfg, model.config, tokenizer)
    if checkpoint is not None:
        restore_clock(checkpoint, clock, layout, check_layout=not cfg.allow_resume_changes)
    # Training, watched for NaN/inf losses and stop signals from the first step to the last write.
    agreement = RankAgreement(clock)
    guard, stop_on_signal = DivergenceGuard(), StopOnSignal(agreement)
    trainer = build_trainer(cfg, out, model, tokenizer, train_rows, texts.eval, clock, budget_s, agreement, layout,
                            [guard, stop_on_signal, *callbacks])
    with stop_on_signal.installed():
        if nothing_left:  # a checkpoint at the end of the run (a kill during the final save): complete the records
            train_output = load_finished(trainer, checkpoint)
        else:
            train_output = trainer.train(resume_from_checkpoint=checkpoint)
        guard.raise_if_diverged(cfg.learning_rate, last_complete_checkpoint(out))
        stop_on_signal.raise_if_stopped(trainer.state.global_step)
        stop_on_signal.finishing(
            f"the last complete checkpoint is {last_complete_checkpoint(out)}: resume with --resume_from_checkpoint "
            "true to write the final model"
        )
        # Records: the final evaluation, model, samples, run.json and card.
        result = _record(cfg, out, state, trainer, train_output, tokenizer, texts, train_rows)
    # Rank 0 alone writes the records: every rank returns (and may exit) once the run folder is complete.
    state.wait_for_everyone()
    stop_on_signal.raise_if_received_late(trainer.state.global_step, out)
    return result


def _record(cfg: PretrainConfig, out: Path, state: PartialState, trainer: PretrainTrainer, train_output: Any,
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
    metrics = run_metrics(trainer, final, train_output.training_loss, peak_memory_mb())
    if trainer.is_world_process_zero():
        sample_tokens = min(SAMPLING.max_new_tokens, cfg.max_length)
        samples = write_samples(model, tokenizer, cfg.num_samples, sample_tokens, cfg.seed, out / "samples.md",
                                texts.prompts or SAMPLE_PROMPTS)
        description = {**describe_run(cfg, model, tokenizer, texts, train_rows), "samples": samples,
                       "evaluations": [h["step"] for h in history if "eval_loss" in h],
                       "overhead_skipped": trainer.allowance.skipped if trainer.allowance else None,
                       "fsdp_version": trainer.accelerator.state.fsdp_plugin.fsdp_version if trainer.is_fsdp_enabled
                       else None}
        compute = compute_record(flops_per_token(model, cfg.max_length), metrics["tokens_seen"],
                                 metrics["train_seconds"], cfg.peak_flops, description["device"],
                                 description["precision"])
        settings = training_settings(cfg)
        record = {
            "config": {**cfg.to_dict(), "output_dir": str(out), "model_config": model.config.to_dict()},
            "sources": cfg.sources,
            "fingerprint": settings_fingerprint(settings),
            "compute": compute,
            **({"sft": sft_record(cfg, model, tokenizer, texts.prompts, train_rows)} if isinstance(cfg, SFTConfig)
               else {}),
        }
        write_run_record(out, record, metrics, trainer.state.log_history, description)
        refresh_model_card(out)
    return PretrainResult(model=model, tokenizer=tokenizer, output_dir=out, metrics=metrics)


def _already_complete(out: Path) -> PretrainResult:
    """A finished run resumed: nothing is trained or written; its model and record are returned as they are."""
    metrics = json.loads((out / "run.json").read_text(encoding="utf-8"))["metrics"]
    logger.info("%s is already complete (step %s); nothing to train, nothing written.", out, metrics["train_steps"])
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    return PretrainResult(model=model, tokenizer=load_tokenizer(str(out)), output_dir=out, metrics=metrics,
                          already_complete=True)


@functools.cache  # register once per process
def _destroy_process_group_at_exit() -> None:
    """Destroy the process group when the script ends, unless it already did: a group left alive until interpreter
    shutdown can abort the process (gloo: SIGABRT, "terminate called without an active exception") after a run
    that succeeded. At exit no more collectives can run, so this is safe for scripts that call pretrain() twice."""
    atexit.register(lambda: torch.distributed.is_initialized() and torch.distributed.destroy_process_group())


