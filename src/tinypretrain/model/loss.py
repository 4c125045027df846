"""Next-token cross-entropy from hidden states, optionally weighted per token and chunked so the full logits never
exist at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _summed_ce(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
               token_weights: torch.Tensor | None = None) -> torch.Tensor:
    logits = hidden @ weight.T
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 logits are upcast
    if token_weights is None:
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    per_token = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")  # 0 where ignored
    return (per_token * token_weights.to(per_token.dtype)).sum()


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed CE of ``hidden @ weight.T``, a chunk of tokens at a time, with both gradients made in the forward pass
    while each chunk's logits are at hand (the fused linear cross-entropy of Liger-Kernel, in plain torch).

    Ours because it is measurably faster on CPU than autograd through full logits: one pass over each chunk's
    logits instead of an fp32 copy, a log-softmax and their two backwards over all of them; a ``cpu-2m`` bf16 step
    takes 0.86x the time (benchmarks/RESULTS.md, section 44)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, scale, chunk_size, dtype):
        h, w = hidden.to(dtype), weight.to(dtype)
        exact = torch.promote_types(dtype, torch.float32)  # logits, sums and the weight's gradient: fp32 at least
        grad_hidden = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=exact, device=weight.device) if ctx.needs_input_grad[1] else None
        total = torch.zeros((), dtype=exact, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):  # the dtypes here are chosen, not autocast's
            for start in range(0, len(labels), chunk_size):
                part = slice(start, start + chunk_size)
                logits = (h[part] @ w.T).to(exact)
                target = labels[part].clamp(min=0)  # ignored tokens have scale 0
                log_norm = logits.logsumexp(dim=-1)
                total += ((log_norm - logits.gather(1, target[:, None]).squeeze(1)) * scale[part]).sum()
                if grad_hidden is None and grad_weight is None:
                    continue
                grad = logits.sub_(log_norm[:, None]).exp_()  # softmax, in place of the logits
                grad[torch.arange(len(target), device=grad.device), target] -= 1
                grad = grad.mul_(scale[part, None]).to(dtype)
                if grad_hidden is not None:
                    grad_hidden[part] = grad @ w
                if grad_weight is not None:
                    grad_weight += grad.T @ h[part]
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = hidden.dtype, weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.dtypes
        return (None if grad_hidden is None else (grad_hidden * grad_total).to(hidden_dtype),
                None if grad_weight is None else (grad_weight * grad_total).to(weight_dtype),
                None, None, None, None)


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
    logits are upcast to fp32. ``token_weights`` (``[B, T]``, aligned with ``labels``) scale each label's term.
    Without ``chunk_size`` (None or 0) all tokens go at once, through autograd. With it, tokens go through lm_head + CE
    in chunks, and the gradients of ``hidden`` and ``lm_head_weight`` are made chunk by chunk in the forward pass:
    peak memory holds one ``[chunk, vocab]`` block instead of ``[B*T, vocab]``, and a CPU step is faster (no second
    pass over the logits). The matmuls run in autocast's dtype when it is on.
    """
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    labels = labels[:, 1:].reshape(-1).to(hidden.device)
    if token_weights is not None:
        token_weights = token_weights[:, 1:].reshape(-1).to(hidden.device)
    if not chunk_size:
        return _summed_ce(hidden, lm_head_weight, labels, token_weights)
    if not torch.is_grad_enabled():  # nothing to differentiate: the forward then makes no gradients
        hidden, lm_head_weight = hidden.detach(), lm_head_weight.detach()
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(hidden.dtype, lm_head_weight.dtype)
    # Each token's factor (0 where ignored), in the dtype of the logits and sums (fp32 at least).
    scale = (labels != IGNORE_INDEX).to(torch.promote_types(dtype, torch.float32))
    if token_weights is not None:
        scale = scale * token_weights.to(scale.dtype)
    return _ChunkedLinearCrossEntropy.apply(hidden, lm_head_weight, labels, scale, chunk_size, dtype)
