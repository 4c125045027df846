"""A run's data, from its config: the train and eval texts, the tokenizer, and the training rows."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from itertools import islice
from typing import Any, NamedTuple

from datasets import Dataset, IterableDataset

from ..config.pretrain import PretrainConfig
from ..config.sft import SFTConfig
from ..utils.memory import releasing
from .corpus import generate_stories, story_dataset
from .instruct import instruct_examples, tokenize_prompt_completion
from .load import check_text_column, has_text, load_text_dataset
from .pack import pack_dataset, tokenize_truncate
from .stream import BlockStream
from .tokenizer import load_tokenizer, train_tokenizer

logger = logging.getLogger("tinypretrain")
TOKENIZER_SAMPLE = 50_000  # texts a streamed run trains its tokenizer on
LARGE_CORPUS = 100_000  # texts from which tokenization uses several processes by default


class RunTexts(NamedTuple):
    """A run's texts: what it trains on, what it evaluates on, and where the eval texts came from (for the card)."""

    train: Dataset | IterableDataset
    eval: list[str]
    eval_source: str
    eval_split: str | None = None  # set when the eval texts are a split of the source
    prompts: list[str] | None = None  # sft: held-out instruction prompts, scored before and after tuning


def load_texts(cfg: PretrainConfig) -> RunTexts:
    """The training texts (blank ones dropped) and the eval texts: the eval split if the source has it, else
    ``eval_size`` texts held out of train; then at most ``max_eval_samples`` non-blank ones. For sft, instruction
    examples (``load_instructions``)."""
    if isinstance(cfg, SFTConfig):
        return load_instructions(cfg)
    if cfg.dataset is None:
        train = story_dataset(cfg.builtin_stories, seed=cfg.seed)
        held_out = _unseen_stories(set(train["text"]), cfg.eval_size, cfg.seed + 1)
        texts = _eval_texts(held_out, cfg, "the built-in story generator")
        return RunTexts(train, texts, f"{len(texts)} generated stories (seed {cfg.seed + 1}) that are not in train")

    def load(split: str | None) -> Any:
        return load_text_dataset(cfg.dataset, split=split, text_column=cfg.text_column, streaming=cfg.streaming)

    splits = load(None)
    train = load(cfg.train_split)
    if cfg.streaming:  # a text at a time, so the stream's state_dict is exact (a batched filter re-reads its batch)
        train = train.filter(has_text, input_columns=cfg.text_column)
    else:
        nonblank = functools.partial(_nonblank, text_column=cfg.text_column)
        train = train.filter(releasing(nonblank, train), batched=True)
    if next(iter(train), None) is None:
        raise ValueError(f"The training split {cfg.train_split!r} of {cfg.dataset} is empty (or only blank texts).")
    eval_split = cfg.eval_split.split("[")[0] if cfg.eval_split else None
    if eval_split in splits:
        held_out = (row[cfg.text_column] for row in load(cfg.eval_split))
        source = f"split {cfg.eval_split!r}"
    elif eval_split is not None and cfg.sources.get("eval_split") == "explicit":
        raise ValueError(
            f"eval_split {cfg.eval_split!r} is not a split of {cfg.dataset} (it has {', '.join(splits)}); fix the "
            "name, or leave eval_split unset to hold out eval_size training texts."
        )
    elif cfg.streaming:  # a stream holds out its first texts
        held_out = [row[cfg.text_column] for row in islice(train, cfg.eval_size)]
        train = train.skip(cfg.eval_size)
        source = f"the first {len(held_out)} texts of {cfg.train_split!r}, held out of training"
    elif len(train) < 2:
        raise ValueError(f"{cfg.dataset} has one training text and no eval split to evaluate on; add data.")
    else:
        held = train.train_test_split(test_size=min(cfg.eval_size, max(1, len(train) // 10)), seed=cfg.seed)
        train, held_out = held["train"], held["test"][cfg.text_column]
        source = f"{len(held_out)} texts of {cfg.train_split!r} held out of training (seed {cfg.seed})"
    if cfg.max_train_samples is not None:
        if cfg.streaming:
            train = train.take(cfg.max_train_samples)
        else:
            train = train.select(range(min(cfg.max_train_samples, len(train))))
    from_split = cfg.eval_split if eval_split in splits else None
    return RunTexts(train, _eval_texts(held_out, cfg, cfg.dataset), source, from_split)


def load_instructions(cfg: SFTConfig) -> RunTexts:
    """SFT examples: (prompt, completion) rows to train on, and ``heldout_prompts`` examples from texts not trained on,
    whose prompts are scored and whose full texts are the eval texts. A dataset's eval split, else texts held out of
    its train split, else stories generated with another seed. Held-out prompts built from stories always ask for a
    seeded mix of parts and any sentence, from openings where ``completion_sentences`` says (``every_part``,
    ``first_sentence`` and ``whole_story_fraction`` change training examples only), so scores stay comparable."""
    if cfg.dataset is None:
        stories = story_dataset(cfg.builtin_stories, seed=cfg.seed)["text"]
        held = _unseen_stories(set(stories), cfg.heldout_prompts, cfg.seed + 1)
        train = Dataset.from_dict(instruct_examples(stories, cfg.seed, cfg.completion_sentences, cfg.every_part,
                                                    cfg.first_sentence, cfg.whole_story_fraction))
        held_out = instruct_examples(held, cfg.seed + 1, cfg.completion_sentences)
        source = f"{len(held)} generated stories (seed {cfg.seed + 1}) that are not in train"
    else:
        splits = load_text_dataset(cfg.dataset, split=None, text_column=None)
        raw = load_text_dataset(cfg.dataset, split=cfg.train_split, text_column=None)
        builders = [name for name in ("every_part", "first_sentence") if getattr(cfg, name)]
        if _holds_prompts(raw, cfg) and builders:  # a dataset of neither kind fails here, before any split
            raise ValueError(f"{builders[0]} builds prompts from plain stories, but {cfg.dataset} has its own prompts "
                             f"({cfg.prompt_column!r}); leave {builders[0]} off for a prompt-completion dataset.")
        eval_split = cfg.eval_split.split("[")[0] if cfg.eval_split else None
        if eval_split in splits:
            held_raw = load_text_dataset(cfg.dataset, split=cfg.eval_split, text_column=None)
            source = f"split {cfg.eval_split!r}"
        else:
            parts = raw.train_test_split(test_size=min(cfg.heldout_prompts, max(1, len(raw) // 10)), seed=cfg.seed)
            raw, held_raw = parts["train"], parts["test"]
            source = f"{len(held_raw)} examples of {cfg.train_split!r} held out of training (seed {cfg.seed})"
        train = _instruction_rows(raw, cfg, training=True)
        held_out = _instruction_rows(held_raw, cfg, training=False)[: cfg.heldout_prompts]
    if cfg.max_train_samples is not None:
        train = train.select(range(min(cfg.max_train_samples, len(train))))
    pairs = list(zip(held_out["prompt"], held_out["completion"]))
    texts = [prompt + completion for prompt, completion in pairs][: cfg.max_eval_samples]
    return RunTexts(train, texts, source, prompts=[prompt for prompt, _ in pairs])


def _unseen_stories(seen: set[str], n: int, seed: int) -> list[str]:
    """``n`` built-in stories of another ``seed`` that are not in ``seen`` (the generator repeats some)."""
    return [t for t in dict.fromkeys(generate_stories(n * 3, seed=seed)) if t not in seen][:n]


def _instruction_rows(ds: Dataset, cfg: SFTConfig, training: bool) -> Dataset:
    """``prompt`` and ``completion`` columns from a prompt-completion dataset, or from a text column (instructions
    built from stories, as ``every_part`` and ``first_sentence`` say for ``training`` rows and as a seeded mix for
    held-out ones, or TinyStories-Instruct texts split at ``Story:``)."""
    if _holds_prompts(ds, cfg):
        columns = (cfg.prompt_column, cfg.completion_column)
        for column in columns:
            check_text_column(ds, column)
        return ds.select_columns(list(columns)).rename_columns(dict(zip(columns, ("prompt", "completion"))))
    check_text_column(ds, cfg.text_column)
    texts = [t for t in ds[cfg.text_column] if has_text(t)]
    return Dataset.from_dict(instruct_examples(texts, cfg.seed, cfg.completion_sentences,
                                               training and cfg.every_part, training and cfg.first_sentence,
                                               cfg.whole_story_fraction if training else 0.0))


def _holds_prompts(ds: Dataset, cfg: SFTConfig) -> bool:
    """Whether ``ds`` has prompt-completion columns (else it has a text column; neither is an error)."""
    if all(c in ds.column_names for c in (cfg.prompt_column, cfg.completion_column)):
        return True
    if cfg.text_column not in ds.column_names:
        raise ValueError(f"{cfg.dataset} has neither {cfg.prompt_column!r} and {cfg.completion_column!r} columns "
                         f"(prompt-completion) nor a {cfg.text_column!r} column of stories; it has {ds.column_names}.")
    return False


def _nonblank(batch: dict[str, list], text_column: str) -> list[bool]:
    return [has_text(t) for t in batch[text_column]]


def _eval_texts(texts: Iterable[str], cfg: PretrainConfig, source: str) -> list[str]:
    chosen = list(islice(filter(has_text, texts), cfg.max_eval_samples))
    if not chosen:
        raise ValueError(f"The eval texts of {source} are empty (or only blank); set eval_split or eval_size.")
    return chosen


def make_tokenizer(cfg: PretrainConfig, train_texts: Dataset | IterableDataset, checkpoint: str | None) -> Any:
    """The configured tokenizer; else the one this run trained (saved with each checkpoint); else a new BPE."""
    if cfg.tokenizer is not None:
        return load_tokenizer(cfg.tokenizer)
    if checkpoint is not None:
        return load_tokenizer(checkpoint)
    if cfg.streaming:  # learn the vocabulary from the stream's head
        train_texts = [row[cfg.text_column] for row in islice(train_texts, TOKENIZER_SAMPLE)]
    return train_tokenizer(
        train_texts, vocab_size=cfg.vocab_size, model_max_length=cfg.max_length, text_column=cfg.text_column
    )


def training_rows(cfg: PretrainConfig, train: Dataset | IterableDataset, tokenizer: Any) -> Dataset | BlockStream:
    """Tokenized training rows: packed blocks of ``max_length`` (on the fly for streams), or truncated stories; for
    sft, one example per row with the prompt's labels masked."""
    if isinstance(cfg, SFTConfig):
        return _at_least_a_batch(cfg, _instruction_tokens(cfg, train, tokenizer))
    if cfg.streaming:  # tokenized and packed as Trainer pulls batches, resumable where a checkpoint left it
        return BlockStream(train, tokenizer, cfg.max_length, cfg.text_column)
    pack = cfg.packing != "truncate"
    tokenized = train.map(
        releasing(tokenize_truncate, train),
        batched=True,
        num_proc=cfg.num_proc if cfg.num_proc is not None else default_num_proc(len(train)),
        remove_columns=train.column_names,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_length": cfg.max_length,
            "text_column": cfg.text_column,
            "overflow": "split" if pack else "truncate",
            "return_attention_mask": not pack,
        },
        desc="Tokenizing",
    )
    # numpy rows: the dataloader fetches a 64x512 batch 2.7x faster than as Python lists (benchmarks/RESULTS.md).
    return _at_least_a_batch(cfg, (pack_dataset(tokenized, cfg.max_length) if pack else tokenized).with_format("numpy"))


def _at_least_a_batch(cfg: PretrainConfig, rows: Dataset) -> Dataset:
    """``rows``, unless dropping an epoch's last, smaller batch would leave no step to train."""
    if cfg.dataloader_drop_last and len(rows) < (batch := cfg.per_device_train_batch_size * cfg.world_size):
        raise ValueError(
            f"The training data makes {len(rows)} rows, fewer than one batch of {batch}, and an epoch's last, smaller "
            "batch is dropped (dataloader_drop_last: on where the model is compiled), so no step would run; give more "
            "data, a smaller per_device_train_batch_size, or dataloader_drop_last=false."
        )
    return rows


def _instruction_tokens(cfg: SFTConfig, train: Dataset, tokenizer: Any) -> Dataset:
    weight = cfg.request_loss_weight if cfg.request_loss_weight != 1 else None
    rows = train.map(tokenize_prompt_completion, batched=True, remove_columns=train.column_names,
                     fn_kwargs={"tokenizer": tokenizer, "max_length": cfg.max_length, "request_weight": weight},
                     desc="Tokenizing")
    cut = sum(rows["truncated"])
    if cut:
        logger.warning("%d of %d examples were longer than max_length=%d: their completions were cut (raise "
                       "max_length to keep them whole).", cut, len(rows), cfg.max_length)
    return rows  # ``truncated`` stays for run.json; the collator reads input_ids, labels and loss_weights


def default_num_proc(texts: int) -> int | None:
    """Tokenization processes when num_proc is not set: one below LARGE_CORPUS texts (starting workers costs more
    than it saves, and on 2 cores num_proc=8 was no faster: benchmarks/RESULTS.md), else one per core up to 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(8, cores) if texts >= LARGE_CORPUS and cores > 2 else None

