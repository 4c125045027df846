"""Compute accounting: training FLOPs per token, what a run achieved, and its model FLOPs utilisation (MFU)."""

from __future__ import annotations

from typing import Any

from torch import nn

# Peak dense FLOP/s of known GPUs from their vendors' data sheets: (bf16 tensor cores, fp32 without them).
GPU_PEAK_FLOPS = {
    "H200": (989e12, 67e12),
    "H100": (989e12, 67e12),  # SXM; the PCIe card is lower (756e12 bf16)
    "A100": (312e12, 19.5e12),
    "L40S": (362e12, 91.6e12),
    "L4": (121e12, 30.3e12),
    "A10": (125e12, 31.2e12),
}


def flops_per_token(model: nn.Module, seq_len: int) -> int:
    """Training FLOPs per token: 6 per weight of every matmul (forward 2, backward 4), including the output head and
    excluding the input embedding lookup, plus attention's scores and weighted sum over ``seq_len`` keys (the
    standard 12 * layers * hidden * seq_len; causal masking is not discounted, as is the custom)."""
    matmul_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    config = model.config
    return 6 * matmul_weights + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def peak_flops(device_name: str, precision: str) -> float | None:
    """The data-sheet peak of a known GPU for ``precision`` (``"bf16"``/``"fp16"`` use the tensor cores), else None."""
    for name, (tensor, fp32) in GPU_PEAK_FLOPS.items():
        if name in device_name:
            return tensor if precision in ("bf16", "fp16") else fp32
    return None


def compute_record(per_token: int, tokens: int, train_seconds: float, given_peak: float | None, device: str,
                   precision: str) -> dict[str, Any]:
    """run.json's ``compute``: FLOPs per token, in total, per training second, and as a fraction of the peak: the one
    given (``peak_flops``), else the data sheet's for ``device`` at ``precision``, else none (no MFU)."""
    peak = given_peak or peak_flops(device, precision)
    peak_source = "peak_flops" if given_peak else "data sheet" if peak else None
    total = per_token * tokens
    achieved = total / train_seconds if train_seconds > 0 else None
    return {
        "flops_per_token": per_token,
        "total_flops": total,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak,
        "peak_source": peak_source,
        "mfu": achieved / peak if achieved and peak else None,
    }
