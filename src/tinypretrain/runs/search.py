"""search(): hyperparameter search for a time or token budget on Optuna: TPE sampling over a YAML-declared space,
pruning on the in-training evaluations, an SQLite study that resumes and that several processes share, then the best
trial re-run with several seeds."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from ..config.budget import parse_duration
from ..config.fields import coerce, read_config_file, scalar_types
from ..config.pretrain import PretrainConfig
from ..config.settings import NOT_REPRODUCED
from ..train.run import pretrain
from ..utils.figures import save_figure
from ..utils.io import atomic_write_text
from ..utils.stats import format_mean_ci, mean_ci
from ..utils.tables import csv_table, markdown_table
from .sweep import budget_fields, parse_token_budget

# Used when no space is given: the optimiser settings that matter most at a fixed shape (docs/search.md).
DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"low": 3e-4, "high": 1e-2, "log": True},
    "warmup_steps": {"low": 0.0, "high": 0.1},
    "decay_fraction": {"low": 0.1, "high": 0.6},
    "weight_decay": {"low": 0.0, "high": 0.2},
    "adam_beta2": {"low": 0.9, "high": 0.999},
}
# A trial sets these itself: searching them would break the study (where runs go, the budget, the seed).
NOT_SEARCHABLE = {"output_dir", "seed", "max_time", "max_steps", "num_train_epochs", "overwrite_output_dir",
                  "resume_from_checkpoint", "recipe"}
# Evaluations during each trial (fractions of the budget) that the pruner compares, unless eval_steps is given.
TRIAL_EVAL_STEPS = 0.2
TRIAL_COLUMNS = ("trial", "state", "value", "steps", "train_seconds")


@dataclass(frozen=True)
class Dimension:
    """One searched field: a list of choices, or a range (``low``..``high``, optionally ``log`` or ``step``)."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def spec(self) -> list[Any] | dict[str, Any]:
        """This dimension as the space file spells it."""
        if self.choices is not None:
            return list(self.choices)
        return {"low": self.low, "high": self.high, "log": self.log, **({"step": self.step} if self.step else {})}

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        kinds = scalar_types(PretrainConfig, self.name)
        if int in kinds and float not in kinds:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def parse_space(space: dict[str, Any] | str | Path | None) -> list[Dimension]:
    """The dimensions of a search space: a mapping (or a YAML/JSON file of one) from ``PretrainConfig`` field to a
    list of choices or ``{low, high, log, step}``; None gives ``DEFAULT_SPACE``."""
    if space is None:
        space = DEFAULT_SPACE
    elif not isinstance(space, dict):
        space = read_config_file(space)
    if not space:
        raise ValueError("The search space is empty; give at least one field, e.g. learning_rate: {low: 1e-4, high: "
                         "1e-2, log: true}.")
    fields = {f.name for f in dataclasses.fields(PretrainConfig) if f.init}
    dimensions = []
    for name, spec in space.items():
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            raise ValueError(f"Search space: {name!r} is not a PretrainConfig field"
                             + (f" (did you mean {close[0]!r}?)" if close else "") + ".")
        if name in NOT_SEARCHABLE:
            raise ValueError(f"Search space: {name} is set by the search itself (budget, seed, folders); remove it.")
        if isinstance(spec, list) and spec:
            dimensions.append(Dimension(name, choices=tuple(coerce(PretrainConfig, name, v) for v in spec)))
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) and set(spec) <= {"low", "high", "log", "step"}:
            low, high = (float(coerce(PretrainConfig, name, spec[k])) for k in ("low", "high"))
            if not low < high or (spec.get("log") and low <= 0):
                raise ValueError(f"Search space: {name} needs low < high (and low > 0 with log), got {low}, {high}.")
            step = float(spec["step"]) if spec.get("step") is not None else None
            dimensions.append(Dimension(name, low=low, high=high, log=bool(spec.get("log", False)), step=step))
        else:
            raise ValueError(f"Search space: {name} must be a list of choices or {{low, high[, log][, step]}}, got "
                             f"{spec!r}.")
    return dimensions


class _PruneOnEval(TrainerCallback):
    """Reports each in-training evaluation to the trial; stops training when the pruner says so."""

    def __init__(self, trial: Any) -> None:
        self.trial, self.evaluations, self.pruned = trial, 0, False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_bits_per_byte" not in metrics or self.pruned:
            return
        self.evaluations += 1
        self.trial.report(metrics["eval_bits_per_byte"], self.evaluations)
        if self.trial.should_prune():
            self.pruned = control.should_training_stop = True


def _study(output_dir: Path, pruner: str, seed: int) -> Any:
    import optuna

    # Heartbeats let any process mark a trial whose process died as failed; the callback queues it again.
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{output_dir.resolve() / 'study.db'}", heartbeat_interval=5, grace_period=20,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
    )
    pruners = {"median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
               "halving": optuna.pruners.SuccessiveHalvingPruner(), "none": optuna.pruners.NopPruner()}
    # Each process draws from its own seed, so two workers on one study never propose the same first trials.
    sampler = optuna.samplers.TPESampler(seed=seed + os.getpid(), constant_liar=True)
    return optuna.create_study(study_name="search", storage=storage, sampler=sampler, pruner=pruners[pruner],
                               direction="minimize", load_if_exists=True)


def search(base: PretrainConfig, output_dir: str | Path, budget: str, *, space: Any = None, budget_kind: str = "time",
           trials: int = 20, seeds: int = 3, pruner: str = "median") -> dict[str, Any]:
    """Search ``space`` (see ``parse_space``) for the settings with the lowest eval bits/byte after ``budget``
    (``"60s"``, or with ``budget_kind="tokens"`` ``"5M"``), each trial a run in ``output_dir``/trial-N, until the study
    in ``output_dir``/study.db holds ``trials`` finished (complete or pruned) trials, whoever ran them: rerun to resume,
    or start several processes on one folder. Then writes trials.md/.csv, best.yaml, importance.png and history.png,
    re-runs the best settings with ``seeds`` seeds (0: skip) and returns the summary (also in search.json)."""
    if importlib.util.find_spec("optuna") is None:
        raise ValueError('tinypretrain search needs Optuna: pip install "tinypretrain[search]"')
    import optuna

    if pruner not in ("median", "halving", "none"):
        raise ValueError(f"--pruner must be median, halving or none, got {pruner!r}.")
    if trials < 1 or seeds < 0:
        raise ValueError(f"--trials must be >= 1 and --seeds >= 0, got {trials} and {seeds}.")
    (parse_duration if budget_kind == "time" else parse_token_budget)(budget)
    dimensions = parse_space(space)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "space.yaml", yaml.safe_dump({d.name: d.spec() for d in dimensions}, sort_keys=False))
    quiet = {k: v for k, v in {"num_samples": 0, "story_samples": 0, "eval_steps": TRIAL_EVAL_STEPS}.items()
             if k not in base.given}

    def objective(trial: optuna.Trial) -> float:
        params = {d.name: d.suggest(trial) for d in dimensions}
        folder = out / f"trial-{trial.number:03d}"
        prune = _PruneOnEval(trial)
        fixed = budget_fields(base.updated(**params), budget, budget_kind)  # a token budget's steps depend on the batch
        result = pretrain(base.updated(**quiet, **params, **fixed, output_dir=str(folder), overwrite_output_dir=True),
                          callbacks=[prune])
        metrics = result.metrics
        trial.set_user_attr("steps", metrics["train_steps"])
        trial.set_user_attr("train_seconds", metrics["train_seconds"])
        if prune.pruned:
            raise optuna.TrialPruned(f"pruned after evaluation {prune.evaluations}")
        return float(metrics["eval_bits_per_byte"])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(out, pruner, base.seed)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    if len(study.get_trials(states=done)) < trials:
        study.optimize(objective, n_trials=trials, callbacks=[optuna.study.MaxTrialsCallback(trials, states=done)])
    return _write_outputs(out, study, base, budget, budget_kind, dimensions, seeds)


def _write_outputs(out: Path, study: Any, base: PretrainConfig, budget: str, budget_kind: str,
                   dimensions: list[Dimension], seeds: int) -> dict[str, Any]:
    import optuna

    names = [d.name for d in dimensions]
    rows = [{"trial": t.number, "state": t.state.name.lower(), "value": t.value, **t.params,
             "steps": t.user_attrs.get("steps"), "train_seconds": t.user_attrs.get("train_seconds")}
            for t in study.trials]
    columns = (*TRIAL_COLUMNS[:3], *names, *TRIAL_COLUMNS[3:])
    atomic_write_text(out / "trials.csv", csv_table(rows, columns))
    atomic_write_text(out / "trials.md", markdown_table(rows, columns))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"No trial of the search in {out} completed (all pruned or failed); see trials.md.")
    best = study.best_trial
    fixed = budget_fields(base.updated(**best.params), budget, budget_kind)
    given = {k: v for k, v in base.to_fields().items() if k in base.given and k not in NOT_REPRODUCED}
    config = {**given, **best.params, **fixed}
    sources = {k: "search" if k in best.params else "budget" if k in fixed else "given" for k in config}
    header = (f"# Best of {len(complete)} complete trials in {out / 'study.db'}: trial {best.number}, "
              f"{best.value:.4f} eval bits/byte after {budget} ({budget_kind}).\n"
              "# Where each value came from: " + ", ".join(f"{k}={v}" for k, v in sources.items()) + "\n")
    atomic_write_text(out / "best.yaml", header + yaml.safe_dump(config, sort_keys=False))
    _plots(out, study, len(complete))
    summary: dict[str, Any] = {"trials": len(study.trials), "complete": len(complete), "best_trial": best.number,
                               "best_value": best.value, "best_params": best.params, "sources": sources}
    if seeds:
        values = []
        for k in range(seeds):
            folder = out / f"best-s{base.seed + k}"
            finished = (folder / "run.json").exists()  # a resumed search reuses it, checked to be these settings
            result = pretrain(base.updated(**best.params, **fixed, seed=base.seed + k, output_dir=str(folder),
                                           overwrite_output_dir=not finished, resume_from_checkpoint=finished or None))
            values.append(float(result.metrics["eval_bits_per_byte"]))
        mean, half = mean_ci(values)
        summary.update(rerun_seeds=seeds, rerun_values=values, rerun_mean=mean, rerun_ci95=half,
                       rerun=format_mean_ci(values))
    atomic_write_text(out / "search.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _plots(out: Path, study: Any, complete: int) -> None:
    """Optuna's optimisation history and (with two complete trials and two dimensions or more) importances."""
    import optuna
    import optuna.visualization.matplotlib as plots

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the plots' API may change
    save_figure(plots.plot_optimization_history(study).figure, out / "history.png")
    if complete >= 2 and len(study.best_trial.params) >= 2:
        save_figure(plots.plot_param_importances(study).figure, out / "importance.png")
