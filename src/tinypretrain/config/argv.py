"""Config from a command line: ``[config.yaml] [--field value ...]`` for ``train``, ``sft`` and ``sweep``, every
field of the config dataclass a flag (HfArgumentParser), the file's keys first, then the flags."""

from __future__ import annotations

import argparse
import dataclasses
import difflib

from transformers import HfArgumentParser

from .fields import nullable, read_config_file
from .pretrain import PretrainConfig
from .sft import SFTConfig

_UNSET = object()


def config_parser(prog: str, description: str, config_class: type[PretrainConfig] = PretrainConfig
                  ) -> HfArgumentParser:
    """Every field of ``config_class`` as a flag, plus an optional config file anywhere among them."""
    parser = HfArgumentParser(config_class, prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("config_file", nargs="?", default=None, help="A YAML/JSON file of fields; flags override it.")
    return parser


def config_from_argv(parser: HfArgumentParser, argv: list[str]) -> tuple[PretrainConfig, argparse.Namespace]:
    """A PretrainConfig from ``[config.yaml] [--field value ...]`` (given: the file's keys, then the flags), and the
    parsed namespace for the command's own flags."""
    config_class = parser.dataclass_types[0]
    argv, nones = _take_nones(argv, config_class)
    # argparse fills a namespace attribute only when it is absent: pre-set, a flag not typed keeps _UNSET.
    names = [f.name for f in dataclasses.fields(config_class) if f.init]
    namespace, unknown = parser.parse_known_args(argv, namespace=argparse.Namespace(**dict.fromkeys(names, _UNSET)))
    if unknown:
        raise ValueError(_unknown_flags(parser, unknown))
    flags = {**{k: v for k, v in vars(namespace).items() if k in names and v is not _UNSET}, **nones}
    from_file = read_config_file(namespace.config_file) if namespace.config_file else {}
    cfg = config_class.from_dict({**from_file, **flags}, source=namespace.config_file or "flags")
    return cfg, namespace


def _take_nones(argv: list[str], config_class: type[PretrainConfig]) -> tuple[list[str], dict[str, None]]:
    """Pull ``--field None`` (or ``null``) out of ``argv`` for fields that accept None, as YAML and Python can:
    HfArgumentParser types an ``int | None`` flag as int, which rejects the word."""
    rest, nones, i = [], {}, 0
    while i < len(argv):
        name, eq, value = argv[i].removeprefix("--").partition("=")
        if not eq and i + 1 < len(argv):
            value = argv[i + 1]
        declared = name in config_class.__dataclass_fields__
        if argv[i].startswith("--") and declared and nullable(config_class, name) and value in ("None", "null"):
            nones[name] = None
            i += 1 if eq else 2
            continue
        rest.append(argv[i])
        i += 1
    return rest, nones


def _unknown_flags(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    flags = [flag for flag in unknown if flag.startswith("-")] or unknown
    known = [o for o in parser.format_usage().replace("[", " ").replace("]", " ").split() if o.startswith("--")]
    hints = []
    for flag in flags:
        close = difflib.get_close_matches(flag.split("=")[0], known, n=1)
        hints.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
    return f"unrecognized arguments: {', '.join(hints)}; see --help for the valid flags."


def train_parser() -> HfArgumentParser:
    parser = config_parser(
        "tinypretrain train",
        "Pretrain a tiny LLaMA. With no arguments: the built-in story corpus, a CPU-sized model, a few minutes. "
        "An optional argument is a YAML/JSON file of these fields; flags override it.",
    )
    return _with_print_config(parser)


def sft_parser() -> HfArgumentParser:
    parser = config_parser(
        "tinypretrain sft BASE",
        "Fine-tune BASE (a run folder or a hub id) on TinyStories-Instruct-style instructions into a new run folder: "
        "prompts of Words, Sentence and Features: Dialogue, then Story:, with the loss on the story only. With no "
        "dataset: instructions built from the built-in stories. An optional argument is a YAML/JSON file of these "
        "fields; flags override it.",
        SFTConfig,
    )
    return _with_print_config(parser)


def _with_print_config(parser: HfArgumentParser) -> HfArgumentParser:
    parser.add_argument("--print_config", action="store_true",
                        help="Print every resolved setting with its source (explicit, recipe, budget, device, default) "
                        "and exit; nothing is written.")
    return parser


def train_config(argv: list[str]) -> PretrainConfig:
    """The PretrainConfig that ``tinypretrain train ARGV`` trains with, before the device's choices."""
    return config_from_argv(train_parser(), argv)[0]


def sft_config(argv: list[str]) -> SFTConfig:
    """The SFTConfig that ``tinypretrain sft ARGV`` trains with, before the device's choices."""
    return config_from_argv(sft_parser(), base_as_flag(argv))[0]


def base_as_flag(argv: list[str]) -> list[str]:
    """``sft BASE ...`` as ``sft --base BASE ...`` (a YAML file after BASE stays the config file)."""
    return ["--base", argv[0], *argv[1:]] if argv and not argv[0].startswith("-") else argv
