"""Compiling mid-run: train eagerly first, then ``torch.compile`` the model in place once the training clock
reaches ``torch_compile_after`` seconds, so a run's first steps and losses do not wait for the compiler."""

from __future__ import annotations

import logging

from transformers import TrainerCallback

from ..config.pretrain import PretrainConfig
from .clock import TrainingClock

logger = logging.getLogger("tinypretrain")


class CompileLater(TrainerCallback):
    """Before the first step at or past ``after_s`` seconds of training (at once when a resumed run is already
    there), compile the model in place with ``nn.Module.compile``: Trainer keeps calling the same module, and its
    saved weights keep their names. The compilation runs on the training clock, like Trainer's own."""

    def __init__(self, clock: TrainingClock, after_s: float, backend: str | None, mode: str | None) -> None:
        self.clock, self.after_s = clock, after_s
        self.options = {"backend": backend or "inductor", "mode": mode}
        self.compiled = False

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if not self.compiled and self.clock.seconds() >= self.after_s:
            logger.info("Compiling the model after %.1f s of training (step %d).", self.clock.seconds(),
                        state.global_step)
            model.compile(**self.options)
            self.compiled = True


def compiles_later(cfg: PretrainConfig) -> bool:
    """Whether the run is compiled mid-run by ``CompileLater`` (and so not by Trainer before the first step)."""
    return bool(cfg.torch_compile and cfg.torch_compile_after)


def compile_later(cfg: PretrainConfig, clock: TrainingClock) -> CompileLater | None:
    """The callback that compiles a ``torch_compile`` run after ``torch_compile_after`` seconds (None otherwise:
    Trainer compiles before the first step, or nothing does)."""
    if not compiles_later(cfg):
        return None
    return CompileLater(clock, cfg.torch_compile_after, cfg.torch_compile_backend, cfg.torch_compile_mode)
