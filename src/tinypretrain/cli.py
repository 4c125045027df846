"""Command line: ``tinypretrain train | generate | eval | tokenizer train``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from transformers import HfArgumentParser

from . import train as training
from .train import PretrainConfig, read_config_file

# Errors users cause and can fix (bad input, missing files, divergence): one line, no traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError)


def _load_model(model_dir: str):
    from transformers import AutoModelForCausalLM

    from .tokenizer import load_tokenizer

    if not Path(model_dir, "config.json").exists():
        raise ValueError(f"{model_dir} is not a model folder (no config.json); pass a run's output_dir.")
    # safetensors only, never pickles; no remote code.
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False)
    return model, load_tokenizer(model_dir)


def _train(argv: list[str]) -> None:
    parser = HfArgumentParser(
        PretrainConfig,
        prog="tinypretrain train",
        description=(
            "Pretrain a tiny LLaMA. With no arguments: the built-in story corpus, a CPU-sized model, a few minutes. "
            "An optional first argument is a YAML/JSON file of these fields; flags override it."
        ),
    )
    config_file = argv[0] if argv and not argv[0].startswith("-") else None
    flags = argv[1:] if config_file else argv
    # Precedence: flags > config file > recipe > defaults. HfArgumentParser passes every field explicitly, so the
    # recipe and the file become the parser's defaults.
    recipe = next((flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag == "--recipe"), None)
    recipe = next((flag.split("=", 1)[1] for flag in flags if flag.startswith("--recipe=")), recipe)
    base = {**(read_config_file(config_file) if config_file else {}), **({"recipe": recipe} if recipe else {})}
    if base:
        resolved = asdict(PretrainConfig.from_dict(base, source=config_file or "--recipe"))
        parser.set_defaults(**{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in resolved.items()})
    (cfg,) = parser.parse_args_into_dataclasses(args=flags)
    result = training.pretrain(cfg)
    m = result.metrics
    print(f"\nModel and tokenizer saved to {result.output_dir}")
    print(
        f"eval loss {m['eval_loss']:.3f} | bits/byte {m['eval_bits_per_byte']:.3f} | "
        f"{m['tokens_seen']:,} tokens at {m['train_tokens_per_s']:,.0f} tok/s | wall {m['wall_time_s']:.0f}s"
    )
    print(f"\n{(result.output_dir / 'samples.md').read_text(encoding='utf-8')}")


def _generate(args: argparse.Namespace) -> None:
    from .generate import generate

    model, tokenizer = _load_model(args.model_dir)
    outputs = generate(
        model,
        tokenizer,
        args.prompt or [""],
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    for text in outputs:
        print(text, end="\n\n---\n\n")


def _eval(args: argparse.Namespace) -> None:
    from .data import load_text_dataset
    from .evaluate import evaluate

    model, tokenizer = _load_model(args.model_dir)
    ds = load_text_dataset(args.dataset, args.split, text_column=args.text_column)
    if args.max_samples:
        ds = ds.select(range(min(args.max_samples, len(ds))))
    print(json.dumps(evaluate(model, tokenizer, ds, text_column=args.text_column), indent=2))


def _tokenizer_train(args: argparse.Namespace) -> None:
    from .tokenizer import train_tokenizer

    tokenizer = train_tokenizer(
        args.input, vocab_size=args.vocab_size, save_dir=args.output, text_column=args.text_column
    )
    print(f"Trained a {len(tokenizer)}-token byte-level BPE; saved to {args.output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinypretrain", description="Pretrain tiny LLaMA-style language models.")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="Pretrain a model (see `tinypretrain train --help`).", add_help=False)

    gen = sub.add_parser("generate", help="Sample stories from a trained model.")
    gen.add_argument("model_dir")
    gen.add_argument("--prompt", action="append", help="Repeat for a batch; default: one empty prompt (a new story).")
    gen.add_argument("--max_new_tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top_k", type=int, default=40)
    gen.add_argument("--top_p", type=float, default=0.95)
    gen.add_argument("--seed", type=int, default=None)

    ev = sub.add_parser("eval", help="Per-story loss, perplexity and bits/byte of a model on a dataset.")
    ev.add_argument("model_dir")
    ev.add_argument("--dataset", required=True, help="Hub name or local path.")
    ev.add_argument("--split", default="validation")
    ev.add_argument("--text_column", default="text")
    ev.add_argument("--max_samples", type=int, default=None)

    tok = sub.add_parser("tokenizer", help="Tokenizer tools.")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True)
    tok_train = tok_sub.add_parser("train", help="Train a byte-level BPE on a corpus and save it in HF format.")
    tok_train.add_argument("--input", required=True, help="Corpus path (file or directory; its train split).")
    tok_train.add_argument("--vocab_size", type=int, default=4096)
    tok_train.add_argument("--output", required=True, help="Directory to save the tokenizer to.")
    tok_train.add_argument("--text_column", default="text")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tinypretrain`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    args, rest = parser.parse_known_args(argv)
    if args.command != "train" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    handlers = {"train": lambda: _train(rest), "generate": lambda: _generate(args), "eval": lambda: _eval(args)}
    handlers["tokenizer"] = lambda: _tokenizer_train(args)
    try:
        handlers[args.command]()
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"tinypretrain: error: {err}", file=sys.stderr)
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return 1
    return 0
