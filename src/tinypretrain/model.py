"""Building models from configs and counting their parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel

from .init import InitName, init_model


def build_model(config: LlamaConfig, *, init: InitName = "normal", seed: int | None = None) -> PreTrainedModel:
    """A fresh ``LlamaForCausalLM`` (fp32) with the chosen init applied deterministically from ``seed``."""
    model = AutoModelForCausalLM.from_config(config)
    return init_model(model, init, seed=seed)


@dataclass(frozen=True)
class ParameterCount:
    """Parameter totals by role, plus one ``(name, shape, count)`` row per parameter tensor."""

    total: int
    embeddings: int
    lm_head: int
    body: int
    table: list[tuple[str, tuple[int, ...], int]] = field(repr=False)

    def summary(self) -> str:
        """One line: the total and its split by role."""
        return f"{self.total:,} parameters = embeddings {self.embeddings:,} + lm_head {self.lm_head:,} + body {self.body:,}"

    def __str__(self) -> str:
        width = max(len(name) for name, _, _ in self.table)
        rows = [f"{'parameter':<{width}}  {'shape':>14}  {'count':>12}"]
        rows += [f"{name:<{width}}  {str(tuple(shape)):>14}  {n:>12,}" for name, shape, n in self.table]
        rows.append(self.summary())
        return "\n".join(rows)


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count parameters by role: input embeddings, lm_head (0 when tied), and the transformer body.

    Shared (tied) tensors are counted once, so ``total`` equals the number of values stored on disk.
    """
    table = []
    embeddings = lm_head = 0
    for name, param in model.named_parameters():  # named_parameters already skips tied duplicates
        n = param.numel()
        table.append((name, tuple(param.shape), n))
        if "embed_tokens" in name:
            embeddings += n
        elif name.startswith("lm_head"):
            lm_head += n
    total = sum(n for _, _, n in table)
    return ParameterCount(total, embeddings, lm_head, total - embeddings - lm_head, table)
