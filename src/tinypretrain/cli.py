"""Command line: ``tinypretrain train | sft | sweep | search | generate | eval | card | compare | play | export | push |
tokenizer train``: argument parsing only; each command calls the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import torch
from accelerate import PartialState
from transformers import HfArgumentParser

from .config.argv import base_as_flag, config_from_argv, config_parser, sft_parser, train_parser
from .config.settings import resolve_settings, settings_table
from .config.sft import SFTConfig
from .data.load import load_text_dataset
from .data.tokenizer import train_tokenizer
from .model.build import load_model
from .model.evaluate import evaluate
from .model.generate import SAMPLING, generate
from .runs.compare import COLUMNS, compare, group_columns, group_runs, plot_runs
from .runs.export import export_run
from .runs.play import serve
from .runs.push import push_run
from .runs.search import search
from .runs.sweep import sweep
from .train import run as training
from .train.card import write_model_card
from .train.records import versions
from .train.signals import TrainingInterrupted
from .train.trainer import TrainingDivergedError
from .utils.tables import csv_table, markdown_table

# Errors users cause and can fix (bad input, missing files, a full disk, divergence, too big a batch): one line, exit
# 2 (as argparse's own usage errors). Anything else is shown with its traceback as a probable bug: exit 1 (as an
# uncaught Python exception). Signals: 128 + the signal's number (130 SIGINT, 143 SIGTERM).
USAGE_ERROR, BUG = 2, 1
USER_ERRORS = (ValueError, OSError, TrainingDivergedError, torch.OutOfMemoryError)


def _train(argv: list[str], parser: HfArgumentParser) -> None:
    cfg, namespace = config_from_argv(parser, argv)
    if namespace.print_config:
        print(settings_table(resolve_settings(cfg)))
        return
    result = training.pretrain(cfg)
    if not PartialState().is_main_process:  # under torchrun/accelerate, rank 0 reports
        return
    m = result.metrics
    if result.already_complete:
        print(f"\n{result.output_dir} is already complete (step {m['train_steps']}); nothing was trained or written.")
    else:
        print(f"\nModel and tokenizer saved to {result.output_dir}")
    print(
        f"eval loss {m['eval_loss']:.3f} | bits/byte {m['eval_bits_per_byte']:.3f} | {m['tokens_seen']:,} tokens in "
        f"{m['train_seconds']:.0f}s of training at {m['train_tokens_per_s']:,.0f} tok/s | "
        f"wall {m['wall_time_s']:.0f}s, "
        f"of which {m['outside_training_s']:.0f}s outside training (data, evaluations, saves, records)"
    )
    if isinstance(cfg, SFTConfig):
        sft = json.loads((result.output_dir / "run.json").read_text(encoding="utf-8"))["sft"]
        ended = sft.get("ended")  # absent from run folders written before it was recorded
        print(f"instruction score on {sft['heldout_prompts']} held-out prompts: {_score(sft['score_before'])} before "
              f"-> {_score(sft['score_after'])} after"
              + (f"; stories that ended: {_score(ended['before'])} before -> {_score(ended['after'])} after"
                 if ended else ""))
    print(f"\n{(result.output_dir / 'samples.md').read_text(encoding='utf-8')}")


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _sweep(args: argparse.Namespace, rest: list[str]) -> None:
    base, _ = config_from_argv(config_parser("tinypretrain sweep", "Fields shared by every cell of the sweep."), rest)
    try:
        rows = sweep(base, args.output_dir, args.presets, args.budgets, budget_kind=args.budget_kind,
                     vocab_sizes=args.vocab_sizes, learning_rates=args.learning_rates, seeds=args.seeds)
    except TrainingInterrupted as err:  # a cell's own resume advice does not apply: the sweep resumes its cells
        command = shlex.join(["tinypretrain", "sweep", *sys.argv[2:]]) if sys.argv[1:2] == ["sweep"] else "it"
        raise TrainingInterrupted(err.what, f"rerun the same sweep command to resume: {command}",
                                  err.exit_code) from None
    if PartialState().is_main_process:
        print((Path(args.output_dir) / "sweep.md").read_text(encoding="utf-8"))
        print(f"{len(rows)} cells; table, plot and best-<budget>.yaml in {args.output_dir}")


def _search(args: argparse.Namespace, rest: list[str]) -> None:
    base, _ = config_from_argv(config_parser("tinypretrain search", "Fields shared by every trial."), rest)
    summary = search(base, args.output_dir, args.budget, space=args.space, budget_kind=args.budget_kind,
                     trials=args.trials, seeds=args.seeds, pruner=args.pruner)
    if PartialState().is_main_process:
        print((Path(args.output_dir) / "trials.md").read_text(encoding="utf-8"))
        print(f"best: trial {summary['best_trial']}, {summary['best_value']:.4f} bits/byte, {summary['best_params']}")
        if "rerun" in summary:
            print(f"re-run with {summary['rerun_seeds']} seeds: {summary['rerun']} bits/byte (mean ± 95% CI)")
        print(f"trials.md, best.yaml, history.png, importance.png and search.json in {args.output_dir}")


def _generate(args: argparse.Namespace) -> None:
    model, tokenizer = load_model(args.model_dir)
    outputs = generate(
        model,
        tokenizer,
        [prompt.replace("\\n", "\n") for prompt in args.prompt or [""]],  # "\n" typed in a shell is a new line
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    for text in outputs:
        print(text, end="\n\n---\n\n")


def _eval(args: argparse.Namespace) -> None:
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max_samples must be >= 1 (or left out to evaluate every text), got {args.max_samples}.")
    model, tokenizer = load_model(args.model_dir)
    ds = load_text_dataset(args.dataset, args.split, text_column=args.text_column)
    if args.max_samples is not None:
        ds = ds.select(range(min(args.max_samples, len(ds))))
    print(json.dumps(evaluate(model, tokenizer, ds, text_column=args.text_column), indent=2))


def _card(args: argparse.Namespace) -> None:
    print(f"Wrote {write_model_card(args.run_dir, replace_edited=args.force)}")


def _compare(args: argparse.Namespace) -> None:
    if args.group_by:
        rows, warnings = group_runs(args.run_dirs, args.group_by)
        columns = group_columns(args.group_by, args.csv)
        for warning in warnings:
            print(f"tinypretrain: warning: {warning}", file=sys.stderr)
    else:
        rows, columns = compare(args.run_dirs), COLUMNS
    if args.plot:
        plot_runs(args.run_dirs, args.plot)
    print(csv_table(rows, columns) if args.csv else markdown_table(rows, columns), end="")
    if args.plot:
        where = sys.stderr if args.csv else sys.stdout  # CSV on stdout stays parseable
        print(f"\nPlot of eval bits/byte against tokens and seconds: {args.plot}", file=where)


def _play(args: argparse.Namespace) -> None:
    serve(args.run_dirs, host=args.host, port=args.port)


def _export(args: argparse.Namespace) -> None:
    done = export_run(args.run_dir, args.format, dtype=args.dtype, output=args.output, with_past=args.with_past)
    checks = ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}" for k, v in done.checks.items())
    print(f"Exported {args.run_dir} to {done.path} ({done.format} {done.dtype}, {done.bytes / 2**20:.1f} MiB, "
          f"{done.seconds:.0f}s); checked: {checks}")


def _push(args: argparse.Namespace) -> None:
    print(f"Pushed {args.run_dir} to {args.repo_id}: {push_run(args.run_dir, args.repo_id, private=args.private)}")


def _tokenizer_train(args: argparse.Namespace) -> None:
    if not Path(args.input).expanduser().exists():
        raise ValueError(f"--input {args.input} does not exist; pass a corpus file (.txt, .jsonl, .json, .parquet) or "
                         "a folder of them.")
    if (Path(args.output) / "run.json").exists():
        raise ValueError(f"--output {args.output} is a tinypretrain run folder; its tokenizer belongs to its model "
                         "(pass the folder as --tokenizer to reuse it). Pick another --output.")
    tokenizer = train_tokenizer(
        args.input, vocab_size=args.vocab_size, save_dir=args.output, text_column=args.text_column
    )
    print(f"Trained a {len(tokenizer)}-token byte-level BPE; saved to {args.output}")


class _Stopped(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped(signum)


class _Parser(argparse.ArgumentParser):
    """No abbreviated flags: ``--recip`` is an unknown flag, never a silent ``--recipe``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinypretrain", description="Pretrain tiny LLaMA-style language models.")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("train", help="Pretrain a model (see `tinypretrain train --help`).", add_help=False)
    sub.add_parser("sft", help="Instruction-tune a trained model (see `tinypretrain sft --help`).", add_help=False)

    sw = sub.add_parser(
        "sweep",
        help="Train a grid of shapes under equal time or token budgets; table, plot, best config.",
        description="Other arguments ([config.yaml] [--field value ...]) set the fields every cell shares.",
    )
    sw.add_argument("--presets", nargs="+", required=True, help="Model presets (tinypretrain.list_presets()).")
    sw.add_argument("--budgets", nargs="+", required=True, help="Times ('60s', '5m') or, with --budget_kind tokens, '5M'.")
    sw.add_argument("--budget_kind", choices=["time", "tokens"], default="time")
    sw.add_argument("--vocab_sizes", nargs="+", type=int, help="Tokenizer vocabularies to try (default: vocab_size).")
    sw.add_argument("--learning_rates", nargs="+", type=float, help="Peak rates to try (default: learning_rate).")
    sw.add_argument("--seeds", type=int, default=1,
                    help="Seeds per cell (seed, seed+1, ...): the table shows mean ± 95%% CI; best-*.yaml takes the "
                    "best mean.")
    sw.add_argument("--output_dir", required=True, help="Folder of the sweep; rerun to resume it.")

    se = sub.add_parser(
        "search",
        help="Search settings for a budget with Optuna (TPE, pruning); resumable, several processes can share it.",
        description="Other arguments ([config.yaml] [--field value ...]) set the fields every trial shares.",
    )
    se.add_argument("--budget", required=True, help="A time ('60s', '5m') or, with --budget_kind tokens, '5M'.")
    se.add_argument("--budget_kind", choices=["time", "tokens"], default="time")
    se.add_argument("--space", default=None, help="YAML of field: [choices] or {low, high, log, step} (default: "
                    "learning rate, warmup, decay, weight decay, beta2; docs/search.md).")
    se.add_argument("--trials", type=int, default=20, help="Finished trials the study should hold, all processes "
                    "together.")
    se.add_argument("--seeds", type=int, default=3, help="Seeds to re-run the best trial with (0: none).")
    se.add_argument("--pruner", choices=["median", "halving", "none"], default="median",
                    help="Stop trials whose in-training evaluations trail (median of the others, or successive "
                    "halving).")
    se.add_argument("--output_dir", required=True, help="Folder of the search (study.db, trials); rerun to resume.")

    play = sub.add_parser("play", help="A web page to try runs side by side (pip install \"tinypretrain[play]\").")
    play.add_argument("run_dirs", nargs="+", metavar="RUN", help="Finished run folders, one column each.")
    play.add_argument("--host", default="127.0.0.1", help="Address to bind (default: this machine only).")
    play.add_argument("--port", type=int, default=7860)

    gen = sub.add_parser("generate", help="Sample stories from a trained model.")
    gen.add_argument("model_dir")
    gen.add_argument("--prompt", action="append",
                     help="Repeat for a batch; \\n is a new line (sft prompts: 'Words: dog, ball\\nStory:'); default: "
                     "one empty prompt (a new story).")
    gen.add_argument("--max_new_tokens", type=int, default=SAMPLING.max_new_tokens)
    gen.add_argument("--temperature", type=float, default=SAMPLING.temperature, help="0: greedy.")
    gen.add_argument("--top_k", type=int, default=SAMPLING.top_k, help="0: no top-k cut.")
    gen.add_argument("--top_p", type=float, default=SAMPLING.top_p)
    gen.add_argument("--seed", type=int, default=None)

    ev = sub.add_parser("eval", help="Per-story loss, perplexity and bits/byte of a model on a dataset.")
    ev.add_argument("model_dir")
    ev.add_argument("--dataset", required=True, help="Hub name or local path.")
    ev.add_argument("--split", default="validation")
    ev.add_argument("--text_column", default="text")
    ev.add_argument("--max_samples", type=int, default=None)

    card = sub.add_parser("card", help="Write (or rewrite) a finished run's model card, README.md, from its run.json.")
    card.add_argument("run_dir")
    card.add_argument("--force", action="store_true", help="Replace a README.md that was edited or not ours.")

    cmp = sub.add_parser("compare", help="Finished runs side by side: a table of settings and metrics, and a plot.")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp.add_argument("--csv", action="store_true", help="Print CSV instead of a markdown table.")
    cmp.add_argument("--plot", default=None, help="Also write a PNG of eval bits/byte against tokens and seconds here.")
    cmp.add_argument("--group_by", nargs="+", metavar="FIELD",
                     help="Group runs by these settings: n, mean ± 95%% CI and Welch's p against the first group.")

    export = sub.add_parser("export", help="Write a finished run as GGUF (llama.cpp, Ollama) or ONNX (ONNX Runtime, "
                            "transformers.js), checked against the model (pip install \"tinypretrain[export]\").")
    export.add_argument("run_dir")
    export.add_argument("--format", required=True, choices=["gguf", "onnx"])
    export.add_argument("--dtype", default="f32", help="Weights: f32, f16 or bf16 (GGUF only). Default: f32.")
    export.add_argument("--output", default=None,
                        help="Where to write (default: RUN/export/model-<dtype>.gguf or RUN/export/onnx/).")
    export.add_argument("--with_past", action="store_true",
                        help="ONNX: take and return the key/value cache (what transformers.js runs).")

    push = sub.add_parser("push", help="Upload a finished run (card, weights, tokenizer, run.json, plot) to the hub.")
    push.add_argument("run_dir")
    push.add_argument("--repo_id", required=True, help="Hub model repo, e.g. your-name/tinystories-2m.")
    push.add_argument("--private", action="store_true", help="Create the repo private.")

    tok = sub.add_parser("tokenizer", help="Tokenizer tools.")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True, parser_class=_Parser)
    tok_train = tok_sub.add_parser("train", help="Train a byte-level BPE on a corpus and save it in HF format.")
    tok_train.add_argument("--input", required=True, help="Corpus path (file or directory; its train split).")
    tok_train.add_argument("--vocab_size", type=int, default=4096)
    tok_train.add_argument("--output", required=True, help="Directory to save the tokenizer to.")
    tok_train.add_argument("--text_column", default="text")
    return parser


def console() -> NoReturn:
    """The ``tinypretrain`` command (and ``python -m tinypretrain``): exits with ``main()``'s code. A process of a
    multi-process run leaves without interpreter finalization, once its process group is destroyed: there torch's
    gloo threads can abort a process whose run is complete (SIGABRT, "terminate called without an active
    exception"), failing a launch that succeeded. Everything is written and closed by then."""
    code = main()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tinypretrain`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    args, rest = parser.parse_known_args(argv)
    if args.command not in ("train", "sft", "sweep", "search") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    handlers = {
        "train": lambda: _train(rest, train_parser()),
        "sft": lambda: _train(base_as_flag(rest), sft_parser()),
        "sweep": lambda: _sweep(args, rest),
        "search": lambda: _search(args, rest),
        "generate": lambda: _generate(args),
        "eval": lambda: _eval(args),
        "card": lambda: _card(args),
        "compare": lambda: _compare(args),
        "export": lambda: _export(args),
        "push": lambda: _push(args),
        "play": lambda: _play(args),
        "tokenizer": lambda: _tokenizer_train(args),
    }
    # Until a run takes over the signals (from its first step to its last write), SIGTERM stops like Ctrl-C.
    signal.signal(signal.SIGTERM, _stop)
    try:
        handlers[args.command]()
    except TrainingInterrupted as err:
        print(f"tinypretrain: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        done = " before training started; no model was saved" if args.command in ("train", "sft", "sweep", "search") else ""
        print(f"tinypretrain: stopped by {signal.Signals(signum).name}{done}", file=sys.stderr)
        return 128 + signum
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"tinypretrain: error: {err}", file=sys.stderr)
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return USAGE_ERROR
    except Exception:  # not a mistake of the user's: show everything needed to report it
        traceback.print_exc()
        print(
            "tinypretrain: this looks like a bug in tinypretrain; please report it with the traceback above and "
            f"these versions: {json.dumps(versions())}",
            file=sys.stderr,
        )
        return BUG
    return 0
