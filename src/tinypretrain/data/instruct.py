"""Instruction data in the TinyStories-Instruct format: building (prompt, completion) examples from stories, reading
what a prompt asks for, and tokenizing examples so that only the completion is trained on.

A prompt holds any of ``Features: Dialogue``, ``Words: a, b, c`` and ``Sentence: ...``, then ``Story:``; the
completion is `` <story>`` and the tokenizer's EOS, or a story's opening (its first sentences, without EOS: the story
goes on, as after pretraining's truncation). The tokens that fulfil a request (its words, its sentence, a Dialogue
request's quote marks) can weigh more in the loss than the rest of the story (``request_weight``)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

STORY = "Story:"
_WORD = re.compile(r"[A-Za-z]+")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]")
_SENTENCE_END = re.compile(r"[.!?][\"\u201d']?(?=\s|$)")  # a closing quote belongs to its sentence
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


def request_for(story: str, rng: random.Random, every_part: bool = False, first_sentence: bool = False) -> Request:
    """A seeded request that ``story`` fulfils: a random non-empty mix (with ``every_part``: all) of 3 of its content
    words (never names), one of its sentences (with ``first_sentence``: the one it opens with), and Dialogue when it
    has quoted speech (each part only where the story allows it)."""
    names = {w.lower() for w in _WORD.findall(story) if w[0].isupper()}  # names, and words that open sentences
    content = sorted({w for w in map(str.lower, _WORD.findall(story)) if len(w) > 2} - STOPWORDS - names)
    sentences = [s.strip() for s in _SENTENCE.findall(story) if 4 <= len(s.split()) <= 20 and '"' not in s]
    if first_sentence:  # a request the story answers by opening with the sentence, as a model can learn to
        sentences = [s for s in sentences[:1] if story.lstrip().startswith(s)]
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


def word_pattern(word: str) -> re.Pattern:
    """``word`` as it counts in a story: whole, in any case, with a plain inflection (dog -> dogs, jump -> jumped)."""
    return re.compile(rf"\b{re.escape(word.lower())}(?:s|es|d|ed|ing)?\b", re.IGNORECASE)


def request_spans(request: Request, text: str) -> list[tuple[int, int]]:
    """The character spans of ``text`` that fulfil ``request``: every use of its words, each place its sentence
    appears (ignoring case), and for Dialogue every quote mark."""
    spans = [m.span() for word in request.words for m in word_pattern(word).finditer(text)]
    if request.sentence:
        sentence = re.compile(re.escape(request.sentence.strip()), re.IGNORECASE)
        spans += [m.span() for m in sentence.finditer(text)]
    if request.dialogue:
        spans += [(i, i + 1) for i, char in enumerate(text) if char in _QUOTES]
    return sorted(spans)


def split_instruct_text(text: str) -> tuple[str, str] | None:
    """A TinyStories-Instruct text (``...\\nStory: <story>``) as (prompt, completion); None for a plain story."""
    head, found, story = text.partition(f"\n{STORY}")
    if not found and text.startswith(STORY):
        head, found, story = "", STORY, text[len(STORY):]
    if not found or not story.strip():
        return None
    return (f"{head}\n{STORY}" if head else STORY), " " + story.strip()


def opening(story: str, sentences: int) -> str:
    """The first ``sentences`` sentences of ``story`` (all of it when it has no more)."""
    ends = [match.end() for match in _SENTENCE_END.finditer(story)]
    return story if len(ends) <= sentences else story[: ends[sentences - 1]]


def instruct_examples(texts: list[str], seed: int, sentences: int | None = None, every_part: bool = False,
                      first_sentence: bool = False, whole_fraction: float = 0.0) -> dict[str, list]:
    """``prompt``, ``completion`` and ``cut`` columns from ``texts``: TinyStories-Instruct texts are split at
    ``Story:``; plain stories get a seeded request built from themselves (with ``every_part``, asking for every part
    the story allows; with ``first_sentence``, a requested sentence is the one the story opens with), or with
    ``sentences``, from their opening of that many sentences, which is then the completion (``cut``: the story goes
    on, so no EOS is trained after it). With ``sentences``, a seeded ``whole_fraction`` of the plain stories stays
    whole (with its EOS), so a model tuned on the rest still sees where stories end."""
    rng = random.Random(seed)
    stays_whole = random.Random(f"whole-{seed}")  # its own stream: the requests do not depend on the fraction
    columns: dict[str, list] = {"prompt": [], "completion": [], "cut": []}
    for text in texts:
        pair, cut = split_instruct_text(text), False
        if pair is None:
            story = text.strip()
            whole = not sentences or stays_whole.random() < whole_fraction
            kept = story if whole else opening(story, sentences)
            pair, cut = (request_for(kept, rng, every_part, first_sentence).prompt(), " " + kept), kept != story
        columns["prompt"].append(pair[0])
        columns["completion"].append(pair[1])
        columns["cut"].append(cut)
    return columns


def tokenize_prompt_completion(
    batch: dict[str, list], tokenizer: Any, max_length: int, prompt_column: str = "prompt",
    completion_column: str = "completion", request_weight: float | None = None,
) -> dict[str, list]:
    """Tokenize examples as EOS + prompt + completion + EOS (no final EOS where a ``cut`` column says the completion
    is a story's opening), with the prompt's labels ``-100`` (the loss counts the completion only). Stories start
    after an EOS in pretraining, so the prompt does too. A completion too long for ``max_length`` is cut (keeping its
    start, as pretraining's truncation does), and ``truncated`` says so; an empty completion, or a prompt that leaves
    no room for one, is an error naming the example. With ``request_weight``, a ``loss_weights`` column weighs each
    token's loss: 0 in the prompt, ``request_weight`` for completion tokens that overlap ``request_spans`` of the
    prompt's request, 1 for the rest (a fast tokenizer's offsets place the tokens)."""
    eos = tokenizer.eos_token_id
    prompts = tokenizer(batch[prompt_column], add_special_tokens=False)["input_ids"]
    encoded = tokenizer(batch[completion_column], add_special_tokens=False,
                        return_offsets_mapping=request_weight is not None)
    completions = encoded["input_ids"]
    openings = batch.get("cut") or [False] * len(prompts)
    out: dict[str, list] = {"input_ids": [], "labels": [], "truncated": []}
    for index, (prompt, completion, text, cut) in enumerate(zip(prompts, completions, batch[completion_column],
                                                                openings)):
        if not text or not text.strip():
            raise ValueError(f"Example {index} of a batch has an empty completion; drop it or give it text.")
        prompt = [eos, *prompt]
        if len(prompt) >= max_length:
            raise ValueError(f"An example's prompt has {len(prompt)} tokens, which leaves no room for its completion "
                             f"in max_length={max_length}: raise max_length or shorten the prompt ({text[:40]!r}...).")
        whole = completion if cut else [*completion, eos]
        answer = whole[: max_length - len(prompt)]
        out["input_ids"].append(prompt + answer)
        out["labels"].append([-100] * len(prompt) + answer)
        out["truncated"].append(len(whole) > len(answer))
        if request_weight is not None:
            spans = request_spans(request_of(batch[prompt_column][index]), text)
            weights = [request_weight if any(a < end and start < b for start, end in spans) else 1.0
                       for a, b in encoded["offset_mapping"][index]] + [1.0]  # the EOS, if kept
            out.setdefault("loss_weights", []).append([0.0] * len(prompt) + weights[: len(answer)])
    return out
