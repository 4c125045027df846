"""Instruction data in the TinyStories-Instruct format: building (prompt, completion) examples from stories, reading
what a prompt asks for, and tokenizing examples so that only the completion is trained on.

A prompt holds any of ``Features: Dialogue``, ``Words: a, b, c`` and ``Sentence: ...``, then ``Story:``; the
completion is `` <story>`` and the tokenizer's EOS."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

STORY = "Story:"
_WORD = re.compile(r"[A-Za-z]+")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]")
_QUOTES = ('"', "\u201c", "\u201d")
# Words that say little about a story, so asking for them tests nothing.
STOPWORDS = frozenset(
    "the and was were that this with they them then there their what when from have had said very will your into "
    "she her his him who one day all but not are for you can could would did does out saw see got get went came "
    "just like liked some too let lets its it's also been being about after again because upon once time must other "
    "near".split()
)


@dataclass(frozen=True)
class Request:
    """What an instruction prompt asks for: words to use, a sentence to include, and whether to have dialogue."""

    words: tuple[str, ...] = ()
    sentence: str | None = None
    dialogue: bool = False

    def prompt(self) -> str:
        """The prompt that asks for this, ending with ``Story:``."""
        lines = ["Features: Dialogue"] if self.dialogue else []
        lines += [f"Words: {', '.join(self.words)}"] if self.words else []
        lines += [f"Sentence: {self.sentence}"] if self.sentence else []
        return "\n".join([*lines, STORY])


def request_of(prompt: str) -> Request:
    """What ``prompt`` asks for (the inverse of ``Request.prompt``; TinyStories-Instruct's ``Random sentence:`` too)."""
    words, sentence, dialogue = (), None, False
    for line in prompt.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "words" and value:
            words = tuple(w.strip() for w in value.split(",") if w.strip())
        elif key in ("sentence", "random sentence") and value:
            sentence = value
        elif key == "features":
            dialogue = "dialogue" in value.lower()
    return Request(words, sentence, dialogue)


def request_for(story: str, rng: random.Random, every_part: bool = False) -> Request:
    """A seeded request that ``story`` fulfils: a random non-empty mix (with ``every_part``: all) of 3 of its content
    words (never names), one of its sentences, and Dialogue when it has quoted speech (each part only where the story
    allows it)."""
    names = {w.lower() for w in _WORD.findall(story) if w[0].isupper()}  # names, and words that open sentences
    content = sorted({w for w in map(str.lower, _WORD.findall(story)) if len(w) > 2} - STOPWORDS - names)
    sentences = [s.strip() for s in _SENTENCE.findall(story) if 4 <= len(s.split()) <= 20 and '"' not in s]
    possible = {"words": len(content) >= 3, "sentence": bool(sentences), "dialogue": any(q in story for q in _QUOTES)}
    offered = [part for part, ok in possible.items() if ok]
    if not offered:
        return Request()
    chosen = set(offered if every_part else rng.sample(offered, rng.randint(1, len(offered))))
    return Request(
        words=tuple(rng.sample(content, 3)) if "words" in chosen else (),
        sentence=rng.choice(sentences) if "sentence" in chosen else None,
        dialogue="dialogue" in chosen,
    )


def split_instruct_text(text: str) -> tuple[str, str] | None:
    """A TinyStories-Instruct text (``...\\nStory: <story>``) as (prompt, completion); None for a plain story."""
    head, found, story = text.partition(f"\n{STORY}")
    if not found and text.startswith(STORY):
        head, found, story = "", STORY, text[len(STORY):]
    if not found or not story.strip():
        return None
    return (f"{head}\n{STORY}" if head else STORY), " " + story.strip()


def instruct_examples(texts: list[str], seed: int) -> dict[str, list[str]]:
    """(prompt, completion) columns from ``texts``: TinyStories-Instruct texts are split at ``Story:``; plain stories
    get a seeded request built from themselves."""
    rng = random.Random(seed)
    prompts, completions = [], []
    for text in texts:
        pair = split_instruct_text(text) or (request_for(text, rng).prompt(), " " + text.strip())
        prompts.append(pair[0])
        completions.append(pair[1])
    return {"prompt": prompts, "completion": completions}


def tokenize_prompt_completion(
    batch: dict[str, list], tokenizer: Any, max_length: int, prompt_column: str = "prompt",
    completion_column: str = "completion",
) -> dict[str, list]:
    """Tokenize examples as EOS + prompt + completion + EOS, with the prompt's labels ``-100`` (the loss counts the
    completion only). Stories start after an EOS in pretraining, so the prompt does too. A completion too long for
    ``max_length`` is cut (keeping its start, as pretraining's truncation does), and ``truncated`` says so; an empty
    completion, or a prompt that leaves no room for one, is an error naming the example."""
    eos = tokenizer.eos_token_id
    prompts = tokenizer(batch[prompt_column], add_special_tokens=False)["input_ids"]
    completions = tokenizer(batch[completion_column], add_special_tokens=False)["input_ids"]
    out: dict[str, list] = {"input_ids": [], "labels": [], "truncated": []}
    for index, (prompt, completion, text) in enumerate(zip(prompts, completions, batch[completion_column])):
        if not text or not text.strip():
            raise ValueError(f"Example {index} of a batch has an empty completion; drop it or give it text.")
        prompt = [eos, *prompt]
        if len(prompt) >= max_length:
            raise ValueError(f"An example's prompt has {len(prompt)} tokens, which leaves no room for its completion "
                             f"in max_length={max_length}: raise max_length or shorten the prompt ({text[:40]!r}...).")
        answer = [*completion, eos][: max_length - len(prompt)]
        out["input_ids"].append(prompt + answer)
        out["labels"].append([-100] * len(prompt) + answer)
        out["truncated"].append(len(completion) + 1 > len(answer))
    return out
