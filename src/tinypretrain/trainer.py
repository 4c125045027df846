"""The Trainer subclass, its callbacks and the checkpoint rules: per-story evaluation, an optional chunked loss,
sync-free token counting, and checkpoints that are complete, finite and resumable."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from .budget import OverheadAllowance, TrainingClock, schedule_factor
from .evaluate import STORY_METRICS, EvaluationOverTime, evaluate, story_quality
from .io import atomic_write_json
from .loss import causal_lm_loss
from .optim import MuonWithAdamW

logger = logging.getLogger("tinypretrain")
COMPLETE_MARKER = "tinypretrain_complete"  # written last into a checkpoint; resume trusts only marked ones
EVAL_METRICS = ("loss", "perplexity", "bits_per_byte")


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN/inf."""


class PretrainTrainer(Trainer):
    """Trainer that evaluates per story on the texts of ``eval_dataset``, counts tokens without per-step host syncs,
    optionally computes the loss in chunks, and writes only complete, finite checkpoints."""

    def __init__(
        self,
        *args: Any,
        loss_chunk_size: int | None = None,
        clock: TrainingClock | None = None,
        budget_s: float | None = None,
        layout: dict[str, Any] | None = None,
        allowance: OverheadAllowance | None = None,
        **kwargs: Any,
    ) -> None:
        if loss_chunk_size is not None:  # a public hook: Trainer keeps its own num_items_in_batch scaling
            model = kwargs["model"] if "model" in kwargs else args[0]  # Trainer(model, args, ...) or by keyword
            kwargs["compute_loss_func"] = lambda outputs, labels, num_items_in_batch=None: _chunked_loss(
                outputs, labels, num_items_in_batch, model.get_output_embeddings().weight, loss_chunk_size
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

    def create_optimizer(self, model=None):
        """With ``muon``, Muon for the hidden matrices and AdamW for the rest; else Trainer's ``optim``."""
        if self.optimizer is None and self.args.muon:
            args = self.args
            self.optimizer = MuonWithAdamW(
                self.model, args.learning_rate, args.weight_decay, (args.adam_beta1, args.adam_beta2), args.adam_epsilon
            )
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


def _chunked_loss(outputs, labels, num_items_in_batch, head_weight, chunk_size) -> torch.Tensor:
    nats = causal_lm_loss(outputs.hidden_states[-1], head_weight, labels, chunk_size=chunk_size)
    if num_items_in_batch is None:
        return nats / (labels[:, 1:] != -100).sum().clamp(min=1)
    return nats / num_items_in_batch  # as HF's ForCausalLMLoss; Trainer scales for accumulation and devices


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
        if args.should_save:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            marker = {"step": state.global_step, "train_seconds": clock.seconds(), "wall_seconds": clock.wall_seconds(),
                      "budget_s": self.trainer.budget_s, "layout": self.trainer.layout}
            atomic_write_json(folder / COMPLETE_MARKER, marker)  # resume trusts a checkpoint only once this exists
        clock.resume()  # paused in on_step_end
        if self.trainer.allowance is not None and self.trainer.training:
            self.trainer.allowance.cost["save"] = time.perf_counter() - self._save_started


class DivergenceGuard(TrainerCallback):
    """Stop at the first logged NaN/inf loss (the config turns Trainer's NaN filter off so we can see it)."""

    def __init__(self) -> None:
        self.bad_step: int | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.bad_step = state.global_step
            control.should_training_stop = True
            control.should_save = False


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that finished saving (half-written ones are ignored)."""
    found = []
    for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", path.name)
        if match and (path / COMPLETE_MARKER).exists():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def checkpoint_marker(checkpoint: str | Path) -> dict[str, Any]:
    """What a checkpoint recorded when it completed: its step, the training and wall seconds of the run so far, its
    time budget and the run's layout."""
    path = Path(checkpoint) / COMPLETE_MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} cannot be read ({err}); resume from another checkpoint-N folder.") from None
    if not isinstance(marker, dict) or not isinstance(marker.get("step"), int):
        raise ValueError(f"{path} is not a tinypretrain checkpoint record; resume from another checkpoint-N folder.")
    missing = [key for key in ("train_seconds", "wall_seconds", "layout") if key not in marker]
    if missing:
        raise ValueError(f"{path} was written by an older tinypretrain (no {missing[0]!r}); resume it with that "
                         "version, or start the run again.")
    return marker


def check_resume_matches(checkpoint: str | Path, layout: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint whose model, tokenizer or batch layout differs from this run's, naming each
    difference (training on would silently change the run, or fail deep inside loading the weights)."""
    recorded = checkpoint_marker(checkpoint).get("layout") or {}
    changed = [f"{k}: {recorded[k]!r} -> {v!r}" for k, v in layout.items() if k in recorded and recorded[k] != v]
    if changed:
        raise ValueError(
            f"{checkpoint} was trained with other settings ({'; '.join(changed)}). Resume with the same settings, "
            "or pass allow_resume_changes=true to continue anyway."
        )


def check_checkpoint(checkpoint: Path) -> None:
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


def load_finished(trainer: Trainer, checkpoint: str | Path) -> TrainOutput:
    """Put ``trainer`` in the state of a checkpoint taken at the end of its run (weights and TrainerState), for a
    resume that has nothing left to train."""
    from safetensors.torch import load_file

    weights = load_file(Path(checkpoint) / "model.safetensors")
    missing, unexpected = trainer.model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if trainer.model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{checkpoint} does not hold this model's weights (missing {missing}, unexpected {unexpected}).")
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return TrainOutput(trainer.state.global_step, sum(losses) / len(losses) if losses else float("nan"), {})
