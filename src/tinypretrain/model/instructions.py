"""How well a model follows TinyStories-Instruct requests: of what held-out prompts ask for, the fraction it wrote.

Three parts, each over every prompt that asks for it: requested words used (a word counts with a plain inflection:
dog -> dogs, jump -> jumped), requested sentences present (ignoring case, spacing and quote style), and Dialogue
requests met (quoted speech). The score is the mean of the parts that were asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.instruct import Request, request_of, word_pattern
from .generate import continue_prompts

PARTS = ("words", "sentence", "dialogue")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def _normalized(text: str) -> str:
    return " ".join(text.translate(_QUOTES).lower().split())


def parts_met(request: Request, story: str) -> dict[str, tuple[int, int]]:
    """For each part ``request`` asks for, (met, asked) in ``story``."""
    text = _normalized(story)
    met = {}
    if request.words:
        met["words"] = (sum(word_pattern(w).search(text) is not None for w in request.words), len(request.words))
    if request.sentence:
        met["sentence"] = (int(_normalized(request.sentence) in text), 1)
    if request.dialogue:
        met["dialogue"] = (int('"' in text), 1)
    return met


def instruction_score(model: Any, tokenizer: Any, prompts: Sequence[str], *, seed: int, max_new_tokens: int = 256
                      ) -> dict[str, Any]:
    """Sample one story per prompt (seeded, the library's sampling defaults) and score it: ``score`` (the mean of the
    parts asked for), each part's fraction, ``asked`` (how many prompts ask for each part: a part that few prompts ask
    for weighs as much as any other, so read it beside its count), ``ended`` (the fraction of stories that ended at
    EOS within ``max_new_tokens``: a tuning can teach a model to follow requests and forget to stop) and
    ``prompts`` (how many)."""
    stories = continue_prompts(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, seed=seed)
    totals = {part: [0, 0] for part in PARTS}
    asking = dict.fromkeys(PARTS, 0)
    for prompt, story in zip(prompts, stories):
        for part, (met, asked) in parts_met(request_of(prompt), story.text).items():
            totals[part][0] += met
            totals[part][1] += asked
            asking[part] += 1
    parts = {part: met / asked for part, (met, asked) in totals.items() if asked}
    return {"score": sum(parts.values()) / len(parts) if parts else None, "parts": parts,
            "asked": {part: n for part, n in asking.items() if n},
            "ended": sum(story.ended for story in stories) / len(stories) if stories else None,
            "prompts": len(prompts)}
