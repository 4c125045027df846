"""SFTConfig: a PretrainConfig that fine-tunes a base model on instructions instead of training a new one.

It adds the base and the held-out prompts, and re-declares only the defaults that fine-tuning changes. Everything
else (resume, budgets, signals, records) is ``pretrain()``'s, so an SFT run folder is a run folder like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .fields import documented
from .pretrain import PretrainConfig
from .settings import on_bf16_cpu


@dataclass
class SFTConfig(PretrainConfig):
    """Instruction tuning of ``base`` (a run folder or a hub id) on TinyStories-Instruct-style examples.

    ``dataset`` may hold TRL's prompt-completion columns (``prompt``, ``completion``), texts already in the
    TinyStories-Instruct format (``... Story: ...``), or plain stories, from which instructions are built (Words,
    Sentence, Features: Dialogue); None = the built-in stories. The loss counts completions only. The tokenizer is
    the base's (its source is ``base``). A time budget keeps these defaults: the budget's rate was tuned for
    pretraining, not fine-tuning.
    """

    COMMAND = "sft"

    base: str | None = documented("The model to fine-tune: a run folder or a hub id.", default=None)
    heldout_prompts: int = documented(
        "Held-out instructions (from stories not trained on) scored before and after tuning.", default=200
    )
    prompt_column: str = documented("Column of the prompts in a prompt-completion dataset.", default="prompt")
    completion_column: str = documented("Column of the completions in a prompt-completion dataset.", default="completion")
    completion_sentences: int | None = documented(
        "Plain stories train as their opening of this many sentences, with requests drawn from it (the story goes on: "
        "no EOS after it); None = whole stories.", default=None
    )
    whole_story_fraction: float = documented(
        "With completion_sentences, this seeded fraction of the plain stories trains whole, with its EOS, instead of "
        "as an opening, so the tuned model still learns where stories end; held-out prompts stay openings.",
        default=0.0,
    )
    every_part: bool = documented(
        "Training prompts built from plain stories ask for every part their text allows (3 words, a sentence, "
        "Dialogue where it has speech) instead of a seeded mix; held-out prompts keep the mix.", default=False
    )
    first_sentence: bool = documented(
        "Training prompts built from plain stories that ask for a sentence ask for the one their text opens with, so "
        "tuning teaches the model to open with a requested sentence; held-out prompts keep any sentence.",
        default=False,
    )
    request_loss_weight: float = documented(
        "Loss weight of the completion tokens that fulfil the prompt's request (its words, inflected or not, its "
        "sentence, and for Dialogue the quote marks), against 1 for the rest of the completion; the logged training "
        "loss is the weighted one.",
        default=1.0,
    )

    # PretrainConfig fields whose defaults fine-tuning changes.
    max_length: int = documented("Most tokens per example (prompt + completion); longer completions are cut.",
                            default=512)
    packing: Literal["pack", "pack_documents", "truncate"] = documented(
        "SFT trains one example per row ('truncate'); packing is for pretraining.", default="truncate"
    )
    story_samples: int = documented("Story metrics at each evaluation; the instruction score replaces them.", default=0)
    learning_rate: float = documented("Peak learning rate (AdamW).", default=1e-3)
    lr_scheduler_type: str = documented("Any Trainer schedule.", default="cosine")
    weight_decay: float = documented("AdamW weight decay.", default=0.0)

    def _layers(self) -> list[tuple[str, dict[str, Any]]]:
        # Fine-tuning was measured in fp32 and eager on CPU; the bf16 CPU rule's evidence is pretraining's.
        eager_fp32 = {"bf16": False, "torch_compile": False} if on_bf16_cpu() else {}
        return [("base", {"tokenizer": self.base}), ("sft", eager_fp32)]

    def _problems(self) -> list[str]:
        problems = super()._problems()
        if not self.base:
            problems.append("base is required: pass the run folder or hub id of the model to fine-tune")
        if self.recipe is not None:
            problems.append("recipe is for pretraining; leave it unset for sft")
        if self.packing != "truncate":
            problems.append("sft trains one example per row: leave packing at 'truncate'")
        if self.streaming:
            problems.append("sft does not stream; leave streaming off")
        if self.completion_sentences is not None and self.completion_sentences < 1:
            problems.append(f"completion_sentences must be >= 1 (or unset for whole stories), got "
                            f"{self.completion_sentences}")
        if not 0 <= self.whole_story_fraction <= 1:
            problems.append(f"whole_story_fraction must be in [0, 1], got {self.whole_story_fraction}")
        elif self.whole_story_fraction and self.completion_sentences is None:
            problems.append("whole_story_fraction mixes whole stories into openings: set completion_sentences too "
                            "(without it every story trains whole)")
        if not self.request_loss_weight > 0:
            problems.append(f"request_loss_weight must be > 0 (1 = no extra weight), got {self.request_loss_weight}")
        if self.heldout_prompts < 1:
            problems.append(f"heldout_prompts must be >= 1, got {self.heldout_prompts}")
        return problems
