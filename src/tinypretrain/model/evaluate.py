"""Per-story evaluation: loss, perplexity and tokenizer-agnostic bits per byte, and story-quality metrics of sampled
continuations."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..data.collate import causal_collator
from ..data.load import has_text
from .generate import continue_prompts
from .loss import causal_lm_loss


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def evaluate(
    model: Any,
    tokenizer: Any,
    texts_or_dataset: Iterable[str] | Dataset,
    *,
    text_column: str = "text",
    max_length: int | None = None,
    batch_tokens: int = 16384,
    loss_chunk_size: int = 4096,
    deadline: float | None = None,
) -> dict[str, float]:
    """Score each non-blank text as its tokens + EOS (no BOS), the way the seed evaluates, and average over predicted
    tokens.

    Returns ``loss`` (mean nats per predicted token), ``perplexity`` (exp of it), ``bits_per_byte`` (summed nats /
    ln 2 / UTF-8 bytes of the scored text, comparable across tokenizers), and the counts behind them. Texts longer
    than ``max_length`` (default: the model's context) are scored on their first ``max_length`` tokens; their
    bytes are counted from those tokens. Batches are length-sorted so padding costs little. Raises
    ``EvaluationOverTime`` once ``time.monotonic()`` passes ``deadline`` (a budgeted run's share for evaluations).
    """
    texts = list(texts_or_dataset[text_column] if isinstance(texts_or_dataset, Dataset) else texts_or_dataset)
    texts = [t for t in texts if has_text(t)]
    if not texts:
        raise ValueError("evaluate() needs at least one non-blank text.")
    max_length = max_length or model.config.max_position_embeddings
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("The tokenizer has no EOS token; evaluation scores each text followed by EOS.")
    # verbose=False: texts past the tokenizer's training length are fine up to the model's context, cut below.
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    examples, n_bytes = [], 0
    for text, ids in zip(texts, encoded):
        ids = ids + [eos]
        if len(ids) > max_length:
            ids = ids[:max_length]
            text = tokenizer.decode(ids, skip_special_tokens=True)
        n_bytes += len(text.encode("utf-8"))
        examples.append(ids)

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    collate = causal_collator(pad_token_id=eos)
    order = np.argsort([len(x) for x in examples])[::-1]
    nats, predicted, start = 0.0, 0, 0
    while start < len(order):
        _check_deadline(deadline)
        width = len(examples[order[start]])
        size = max(1, batch_tokens // width)
        batch = collate([{"input_ids": examples[i]} for i in order[start : start + size]])
        start += size
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(device):
            hidden = model.get_decoder()(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
            head = model.get_output_embeddings().weight
            nats += causal_lm_loss(hidden, head, batch["labels"], chunk_size=loss_chunk_size).item()
        predicted += int((batch["labels"][:, 1:] != -100).sum())
    model.train(was_training)
    loss = nats / max(predicted, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": nats / math.log(2) / max(n_bytes, 1),
        "stories": len(texts),
        "predicted_tokens": predicted,
        "bytes": n_bytes,
    }


class EvaluationOverTime(TimeoutError):
    """An evaluation passed its deadline and was abandoned."""


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise EvaluationOverTime("the evaluation passed its deadline")


# ------------------------------------------------------------------------------------------------- story quality
# Cheap, offline proxies for what the TinyStories paper asked GPT-4 to judge. Benchmarks such as HellaSwag sit at
# chance below ~100M parameters, so these are what can tell two tiny story models apart.
STORY_METRICS = ("eos_rate", "repeat_4gram", "distinct_2", "name_consistency", "mean_words")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (letters and inner apostrophes), as the story metrics count them."""
    return [w.lower() for w in _WORD.findall(text)]


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def eos_rate(ended: Sequence[bool]) -> float:
    """Fraction of continuations that ended with EOS within the token limit.

    Catches a model that never learned where a story ends (the seed collator masks every EOS label, so its models
    score ~0). Cannot tell a good ending from an abrupt one, and a limit shorter than a story scores a good model low.
    """
    return sum(map(bool, ended)) / len(ended) if ended else 0.0


def repeat_4gram(continuations: Sequence[str]) -> float:
    """Mean over continuations of the fraction of their word 4-grams that repeat an earlier one in the same text.

    Catches degenerate loops ("and they played and they played ..."), which tiny models fall into. Cannot see
    paraphrased repetition, and a story that repeats a refrain on purpose scores high too. Texts under four words
    are skipped; 0.0 when none is longer.
    """
    rates = []
    for text in continuations:
        grams = _ngrams(words(text), 4)
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def distinct_2(continuations: Sequence[str]) -> float:
    """Distinct word bigrams over all word bigrams, pooled across continuations (0.0 when there are none).

    Catches low diversity: every story told with the same phrases, or loops. Cannot judge whether the varied text
    makes sense (random words score 1.0), and it falls as more or longer texts are pooled, so compare it only at
    equal sample counts and lengths.
    """
    grams = [g for text in continuations for g in _ngrams(words(text), 2)]
    return len(set(grams)) / len(grams) if grams else 0.0


def character_names(prompt: str) -> set[str]:
    """Capitalised words of ``prompt`` that do not start a sentence or a quote (and are not "I"): its characters'
    names, as TinyStories openings introduce them ("a girl named Lily")."""
    names, starts_sentence = set(), True
    for match in re.finditer(r"[A-Za-z]+(?:'[A-Za-z]+)?|[.!?\"\n]", prompt):
        token = match.group()
        if not token[0].isalpha():
            starts_sentence = True
            continue
        if not starts_sentence and token[0].isupper() and token != "I":
            names.add(token.split("'")[0].lower())
        starts_sentence = False
    return names


def name_consistency(prompts: Sequence[str], continuations: Sequence[str]) -> float | None:
    """Of the continuations whose prompt names a character, the fraction that mention one of those names again.

    Catches a model that forgets its protagonist after a sentence. Cannot check that the name is used correctly
    (the right gender, the right role), and counts a name mentioned in passing. None when no prompt names anyone.
    """
    hits = [bool(names & set(words(text))) for p, text in zip(prompts, continuations) if (names := character_names(p))]
    return sum(hits) / len(hits) if hits else None


def mean_words(continuations: Sequence[str]) -> float:
    """Mean number of words per continuation: with eos_rate, tells stories that end early from ones cut off."""
    return sum(len(words(t)) for t in continuations) / len(continuations) if continuations else 0.0


def story_opening(text: str, max_words: int = 30) -> str:
    """The first sentence of ``text`` (at most ``max_words`` words): the prompt the model continues."""
    match = re.match(r"\s*(.*?[.!?])(?=\s|$)", text, flags=re.S)
    sentence = match.group(1) if match else text.strip()
    return " ".join(sentence.split()[:max_words])


def story_quality(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    samples: int = 16,
    max_new_tokens: int = 256,
    seed: int = 0,
    deadline: float | None = None,
) -> dict[str, float]:
    """The story metrics of ``samples`` continuations of the openings of the first non-blank ``texts``.

    Sampling is seeded, so the same model scores the same, and successive evaluations of a run compare like with
    like. ``name_consistency`` is left out when no opening names a character. Raises ``EvaluationOverTime`` when
    sampling passes ``deadline`` (``time.monotonic()``).
    """
    prompts = [story_opening(t) for t in texts if has_text(t)][:samples]
    if not prompts:
        raise ValueError("story_quality() needs at least one non-blank text to take an opening from.")
    _check_deadline(deadline)
    max_time = None if deadline is None else deadline - time.monotonic()
    continuations = continue_prompts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed,
                                     max_time=max_time)
    _check_deadline(deadline)
    stories = [c.text for c in continuations]
    scores = {
        "eos_rate": eos_rate([c.ended for c in continuations]),
        "repeat_4gram": repeat_4gram(stories),
        "distinct_2": distinct_2(stories),
        "name_consistency": name_consistency(prompts, stories),
        "mean_words": mean_words(stories),
    }
    return {name: value for name, value in scores.items() if value is not None}
