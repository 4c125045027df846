"""Checkpoints and resume: which checkpoint is complete, what it recorded, whether it matches this run, and
whether it ends the run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from transformers import LlamaConfig, Trainer, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from ..config.pretrain import PretrainConfig
from ..utils.io import atomic_write_json
from .clock import TrainingClock

COMPLETE_MARKER = "tinypretrain_complete"  # written last into a checkpoint; resume trusts only marked ones


def checkpoint_folder(output_dir: str | Path, step: int) -> Path:
    """Where Trainer saves the checkpoint of ``step``."""
    return Path(output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"


def mark_complete(output_dir: str | Path, step: int, clock: TrainingClock, budget_s: float | None,
                  layout: dict[str, Any]) -> None:
    """Mark ``checkpoint-<step>`` complete, last of all its files: resume trusts only marked checkpoints. The marker
    holds what a resume needs: the step, the clock's training and wall seconds, the time budget and the layout."""
    marker = {"step": step, "train_seconds": clock.seconds(), "wall_seconds": clock.wall_seconds(),
              "budget_s": budget_s, "layout": layout}
    atomic_write_json(checkpoint_folder(output_dir, step) / COMPLETE_MARKER, marker)


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


def resume_point(cfg: PretrainConfig, out: Path) -> str | None:
    """The checkpoint a run resumes from (None: start afresh), checked to be loadable."""
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


def trained_to_the_end(cfg: PretrainConfig, checkpoint: str, budget_s: float | None) -> bool:
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


def run_layout(cfg: PretrainConfig, model_config: LlamaConfig, tokenizer: Any) -> dict[str, Any]:
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
        "dataloader_drop_last": cfg.dataloader_drop_last,  # the steps per epoch, where a resume skips to
        # The precision too: where its default moved (another CPU kind, or a version whose device rule differs), a
        # resume would otherwise go on in another one, silently.
        "bf16": cfg.bf16,
    }


def restore_clock(checkpoint: str | Path, clock: TrainingClock, layout: dict[str, Any], *, check_layout: bool) -> None:
    """Resume ``clock`` from what ``checkpoint`` recorded, after checking (unless told not to) that its layout is
    this run's."""
    if check_layout:
        check_resume_matches(checkpoint, layout)
    marker = checkpoint_marker(checkpoint)
    clock.spent_before, clock.wall_before = marker["train_seconds"], marker["wall_seconds"]
