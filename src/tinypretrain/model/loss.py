"""Next-token cross-entropy from hidden states, optionally weighted per token and chunked so the full logits never
exist at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _summed_ce(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
               token_weights: torch.Tensor | None = None) -> torch.Tensor:
    logits = hidden @ weight.T
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 logits are upcast
    if token_weights is None:
        return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    per_token = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")  # 0 where ignored
    return (per_token * token_weights.to(per_token.dtype)).sum()


def causal_lm_loss(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_size: int | None = None,
    token_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed next-token cross-entropy (nats) of ``labels`` given final hidden states ``[B, T, H]``.

    Labels are shifted here (position t predicts t+1) and -100 is ignored, exactly as HF's ``ForCausalLMLoss``;
    logits are upcast to fp32. ``token_weights`` (``[B, T]``, aligned with ``labels``) scale each label's term. With
    ``chunk_size``, tokens go through lm_head + CE in chunks that are recomputed in backward, so peak memory holds one
    ``[chunk, vocab]`` block instead of ``[B*T, vocab]``: worth it when logits dominate memory (large vocab, big
    batches), at the price of one extra lm_head matmul.
    """
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    labels = labels[:, 1:].reshape(-1).to(hidden.device)
    if token_weights is not None:
        token_weights = token_weights[:, 1:].reshape(-1).to(hidden.device)
    if chunk_size is None or chunk_size >= len(labels):
        return _summed_ce(hidden, lm_head_weight, labels, token_weights)
    total = hidden.new_zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32))
    for start in range(0, len(labels), chunk_size):
        part = slice(start, start + chunk_size)
        weights = None if token_weights is None else token_weights[part]
        total = total + checkpoint(_summed_ce, hidden[part], lm_head_weight, labels[part], weights,
                                   use_reentrant=False)
    return total
