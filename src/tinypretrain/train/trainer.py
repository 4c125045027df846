"""The Trainer subclass and how a run builds it: per-story evaluation, an optional chunked or per-token weighted loss,
sync-free token counting, Muon, finite checkpoints, and a guard that stops at the first NaN/inf loss."""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback

from ..config.pretrain import PretrainConfig
from ..data.collate import causal_collator
from ..data.stream import BlockStream
from ..model.evaluate import STORY_METRICS, EvaluationOverTime, evaluate, story_quality
from ..model.loss import causal_lm_loss
from ..model.optim import MuonWithAdamW, parameter_groups
from .budget import (
    OverheadAllowance,
    budget_callbacks,
    overhead_allowance,
    schedule_factor,
    time_fraction,
)
from .checkpoint import checkpoint_folder, mark_complete
from .clock import TrainingClock
from .compile_later import CompileLater, compile_later, compiles_later
from .signals import RankAgreement

UNBOUNDED_STEPS = 10**9  # what Trainer is told of a time-budgeted run's steps (the clock stops it); never recorded

logger = logging.getLogger("tinypretrain")
EVAL_METRICS = ("loss", "perplexity", "bits_per_byte")


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN/inf."""


class PretrainTrainer(Trainer):
    """Trainer that evaluates per story on the texts of ``eval_dataset``, counts tokens without per-step host syncs,
    optionally computes the loss in chunks or weighs it per token (rows with ``loss_weights``), optionally compiles
    the model mid-run (``compiler``), and writes only complete, finite checkpoints."""

    def __init__(
        self,
        *args: Any,
        loss_chunk_size: int | None = None,
        compiler: CompileLater | None = None,
        loss_in_graph_once_compiled: bool = False,
        clock: TrainingClock | None = None,
        budget_s: float | None = None,
        layout: dict[str, Any] | None = None,
        allowance: OverheadAllowance | None = None,
        **kwargs: Any,
    ) -> None:
        # Trainer's hook gets outputs and labels only, so a batch's loss weights wait here for it.
        self._token_weights: torch.Tensor | None = None
        rows = kwargs["train_dataset"] if "train_dataset" in kwargs else (args[3] if len(args) > 3 else None)
        weighted = "loss_weights" in (getattr(rows, "column_names", None) or ())
        if loss_chunk_size or weighted:  # a public hook: Trainer keeps its num_items_in_batch scaling
            model = kwargs["model"] if "model" in kwargs else args[0]  # Trainer(model, args, ...) or by keyword
            kwargs["compute_loss_func"] = lambda outputs, labels, num_items_in_batch=None: self._hidden_state_loss(
                outputs, labels, num_items_in_batch, model.get_output_embeddings().weight, loss_chunk_size or None
            )
        super().__init__(*args, **kwargs)
        # Trainer's own token counter calls .item() every step, which stalls the host until the GPU catches up.
        # Ours counts packed rows from their shape on the host (every slot is a real token) and padded rows on the
        # device, and reads the total only when logging or saving.
        self.counts_tokens_itself = self.args.include_num_input_tokens_seen == "no"
        self._host_tokens, self._device_tokens = 0, None
        self.clock, self.budget_s = clock or TrainingClock(), budget_s
        self.layout = layout or {}  # what a resume must keep equal (recorded in every checkpoint)
        self.allowance = allowance  # a time budget's share for evaluations and saves during training
        self.training = False  # inside train(): evaluations then count against the allowance
        self.add_callback(_CheckpointRules(self))
        self.compiler = compiler  # compiles the model mid-run
        if compiler is not None:
            self.add_callback(compiler)
        # Once compiled, transformers' loss inside the graph (which inductor fuses) beats the chunked one after it.
        self.loss_in_graph_once_compiled = loss_in_graph_once_compiled and compiler is not None and not weighted

    def _hidden_state_loss(self, outputs, labels, num_items_in_batch, head_weight, chunk_size) -> torch.Tensor:
        # Accelerate autocasts the model's forward only; this loss is outside it, and its lm_head matmul should run in
        # the same precision as transformers' loss does inside.
        with self.accelerator.autocast():
            nats = causal_lm_loss(outputs.hidden_states[-1], head_weight, labels, chunk_size=chunk_size,
                                  token_weights=self._token_weights)
        if num_items_in_batch is None:
            return nats / (labels[:, 1:] != -100).sum().clamp(min=1)
        return nats / num_items_in_batch  # as HF's ForCausalLMLoss; Trainer scales for accumulation and devices

    def _set_signature_columns_if_needed(self) -> None:
        # A private Trainer hook (TRL's SFTTrainer overrides it too): rows keep their ``loss_weights`` for the
        # collator, though the model's forward does not take them. tests/test_sft.py's weighted run fails without it.
        super()._set_signature_columns_if_needed()
        if "loss_weights" not in self._signature_columns:
            self._signature_columns.append("loss_weights")

    def create_optimizer(self, model=None):
        """With ``muon``, Muon for the hidden matrices and AdamW for the rest; with ``embedding_lr`` or ``head_lr``,
        Trainer's ``optim`` over per-part groups (``parameter_groups``); else Trainer's own."""
        args = self.args
        if self.optimizer is None and args.muon:
            self.optimizer = MuonWithAdamW(self.model, args.learning_rate, args.weight_decay,
                                           (args.adam_beta1, args.adam_beta2), args.adam_epsilon,
                                           args.embedding_lr, args.head_lr)
        elif self.optimizer is None and (args.embedding_lr is not None or args.head_lr is not None):
            optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, self.model)
            groups = parameter_groups(self.model, args.learning_rate, args.weight_decay, args.embedding_lr,
                                      args.head_lr)
            self.optimizer = optimizer_class(list(groups.values()), **kwargs)
        return super().create_optimizer(model) if self.optimizer is None else self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """With a time budget, the rate follows the clock (transformers' schedules count steps); a step-based
        warmup-stable-decay gets its decay length from ``decay_fraction``."""
        args = self.args
        if self.lr_scheduler is None and self.budget_s is not None:
            warmup = args.warmup_steps
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer,
                lambda step: min(1.0, step / warmup if warmup >= 1 else 1.0)
                * schedule_factor(
                    args.lr_scheduler_type,
                    self.clock.seconds() / self.budget_s,
                    warmup if warmup < 1 else 0.0,
                    args.decay_fraction,
                ),
            )
        elif args.lr_scheduler_type == "warmup_stable_decay" and "num_decay_steps" not in args.lr_scheduler_kwargs:
            args.lr_scheduler_kwargs = {
                **args.lr_scheduler_kwargs,
                "num_decay_steps": round(args.decay_fraction * num_training_steps),
            }
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.counts_tokens_itself and model.training:
            self._count_tokens(inputs)
        # Training never needs a KV cache, and without one transformers honours per-document position ids.
        inputs = {**inputs, "use_cache": False}
        self._token_weights = inputs.pop("loss_weights", None)
        if self._token_weights is not None and self.compute_loss_func is None:
            raise ValueError("Batches carry loss_weights, but the training rows given to PretrainTrainer did not "
                             "(no 'loss_weights' column), so no weighted loss was set up; pass rows with that column.")
        if self.loss_in_graph_once_compiled and self.compiler.compiled:
            self.compute_loss_func = None
        if self.compute_loss_func is not None:  # the chunked loss works from hidden states, not logits
            inputs.update(logits_to_keep=1, output_hidden_states=True)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        mask = inputs.get("attention_mask")
        if mask is None:
            self._host_tokens += inputs["input_ids"].numel()
        else:
            real = mask.sum()
            self._device_tokens = real if self._device_tokens is None else self._device_tokens + real

    def flush_token_count(self) -> None:
        """Add the tokens counted since the last flush, over all ranks, to ``state`` (a collective: all ranks call)."""
        if not self.counts_tokens_itself:
            return
        local = torch.tensor([self._host_tokens], device=self.args.device)
        if self._device_tokens is not None:
            local += self._device_tokens.to(local.device)
        self.state.num_input_tokens_seen += int(self.accelerator.gather(local).sum())
        self._host_tokens, self._device_tokens = 0, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self.flush_token_count()
        if self.counts_tokens_itself:  # on every line, as Trainer's own counter does
            logs = {**logs, "num_input_tokens_seen": self.state.num_input_tokens_seen}
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Per-story loss, perplexity and bits/byte of the eval texts (Trainer's loop would score packed blocks), and
        the story metrics of ``story_samples`` continuations of their openings."""
        start = time.perf_counter()
        texts = (eval_dataset if eval_dataset is not None else self.eval_dataset)["text"]
        args = self.args
        allowance = self.allowance if self.training and self.allowance and "evaluate" in self.allowance.kinds else None
        deadline = time.monotonic() + allowance.left() if allowance else None
        with self.clock.paused():  # a time budget buys training steps, not evaluations
            try:
                scores = evaluate(self.model, self.processing_class, texts, deadline=deadline)
                if args.story_samples:
                    scores |= story_quality(self.model, self.processing_class, texts, samples=args.story_samples,
                                            max_new_tokens=args.story_max_new_tokens, seed=args.seed,
                                            deadline=deadline)
            except EvaluationOverTime:
                allowance.cost["evaluate"] = math.inf  # none fits: the final evaluation, after training, remains
                logger.warning("An evaluation takes more than the %.1f s of max_time left for evaluations and saves "
                               "during training (10%%); only the final one runs.", allowance.limit)
                return {}
        if allowance:
            allowance.cost["evaluate"] = time.perf_counter() - start
        metrics = {f"{metric_key_prefix}_{name}": scores[name] for name in (*EVAL_METRICS, *STORY_METRICS)
                   if name in scores}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 4)
        metrics["train_seconds"] = round(self.clock.seconds(), 3)  # for quality-vs-time curves
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class _CheckpointRules(TrainerCallback):
    """Start the training clock. Before a save: refuse NaN/inf weights and settle the token count. After it: mark the
    checkpoint complete, with the clock's reading."""

    def __init__(self, trainer: PretrainTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.clock.start()
        self.trainer.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.training = False

    def on_step_end(self, args, state, control, model=None, **kwargs):
        stream = self._stream()
        if stream is not None:
            stream.release(self._trained_blocks(args, state))
        if control.should_save or control.should_training_stop or state.global_step >= state.max_steps:
            # Every checkpoint and the last step log the loss, so the run's record covers every step, across resumes.
            control.should_log = True
        if control.should_save:
            self._save_started = time.perf_counter()
            self.trainer.clock.pause()  # until the checkpoint is written (on_save): saves are not training time
            if not all(torch.isfinite(p).all() for p in self.trainer.model.parameters()):
                raise TrainingDivergedError(
                    f"Weights became NaN/inf before step {state.global_step}; not saving them over good checkpoints."
                )
            self.trainer.flush_token_count()

    def on_save(self, args, state, control, **kwargs):
        clock = self.trainer.clock
        stream = self._stream()
        if stream is not None and state.is_world_process_zero:  # the rank that reads the stream (accelerate dispatches)
            stream.save_position(checkpoint_folder(args.output_dir, state.global_step), self._trained_blocks(args, state))
        if args.should_save:
            mark_complete(args.output_dir, state.global_step, clock, self.trainer.budget_s, self.trainer.layout)
        clock.resume()  # paused in on_step_end
        if self.trainer.allowance is not None and self.trainer.training:
            self.trainer.allowance.cost["save"] = time.perf_counter() - self._save_started

    def _stream(self) -> BlockStream | None:
        rows = self.trainer.train_dataset
        return rows if isinstance(rows, BlockStream) else None

    @staticmethod
    def _trained_blocks(args, state) -> int:
        return state.global_step * args.global_batch_size


class DivergenceGuard(TrainerCallback):
    """Stop at the first logged NaN/inf loss (the config turns Trainer's NaN filter off so we can see it)."""

    def __init__(self) -> None:
        self.bad_step: int | None = None

    def raise_if_diverged(self, learning_rate: float, last_checkpoint: Path | None) -> None:
        if self.bad_step is not None:
            raise TrainingDivergedError(
                f"Loss became NaN/inf at step {self.bad_step}. Lower learning_rate (now {learning_rate}), keep "
                "max_grad_norm > 0, use init='normal', or train in fp32 (bf16=false). Last good checkpoint: "
                f"{last_checkpoint}."
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.bad_step = state.global_step
            control.should_training_stop = True
            control.should_save = False


def trainer_args(cfg: PretrainConfig, out: Path) -> PretrainConfig:
    """What Trainer is given: the resolved settings in ``out``; with max_time, the clock ends training (max_steps
    only if set) and fractional eval/save points are fractions of the time, so Trainer's step-based ones are off.
    These mechanics never reach run.json, which records the settings."""
    changes: dict[str, Any] = {"output_dir": str(out)}
    if compiles_later(cfg):  # compile_later.py compiles it mid-run, not Trainer
        changes.update(torch_compile=False, torch_compile_backend=None, torch_compile_mode=None, torch_compile_after=None)
    if cfg.streaming:  # the stream resumes at its saved position (data/stream.py); Trainer's skip would re-read it
        changes["ignore_data_skip"] = True
    if cfg.max_time is not None:
        changes["max_steps"] = cfg.max_steps if cfg.max_steps > 0 else UNBOUNDED_STEPS
        if time_fraction(cfg.eval_steps):
            changes["eval_strategy"] = "no"
        if time_fraction(cfg.save_steps):
            changes["save_strategy"] = "no"
    return cfg.updated(**changes)


@contextmanager
def tensorboard_dir(logging_dir: str | None):
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


def build_trainer(cfg: PretrainConfig, out: Path, model: PreTrainedModel, tokenizer: Any, train_rows: Any,
                  eval_texts: list[str], clock: TrainingClock, budget_s: float | None, agreement: RankAgreement,
                  layout: dict[str, Any], callbacks: list[TrainerCallback]) -> PretrainTrainer:
    """The run's ``PretrainTrainer``: the resolved settings, the rows and the collator their packing needs, and with a
    time budget the callbacks that stop by the clock and fit evaluations and saves into their share of it."""
    allowance = overhead_allowance(cfg, clock, budget_s)
    with tensorboard_dir(cfg.logging_dir):
        return PretrainTrainer(
            model=model,
            args=trainer_args(cfg, out),
            train_dataset=train_rows,
            eval_dataset=Dataset.from_dict({"text": eval_texts}),
            data_collator=causal_collator(
                tokenizer,  # pads with the tokenizer's pad id, else its EOS
                document_eos_token_id=tokenizer.eos_token_id if cfg.packing == "pack_documents" else None,
            ),
            processing_class=tokenizer,
            callbacks=[*callbacks, *budget_callbacks(cfg, clock, budget_s, allowance, agreement)],
            loss_chunk_size=cfg.loss_chunk_size,
            compiler=compile_later(cfg, clock),
            # The device's chunk size is for eager steps (benchmarks/RESULTS.md, section 44); one you give holds.
            loss_in_graph_once_compiled=cfg.sources.get("loss_chunk_size") == "device",
            clock=clock,
            budget_s=budget_s,
            layout=layout,
            allowance=allowance,
        )
