"""``sdpa_fp32``: transformers' SDPA attention with queries, keys and values in fp32 under a lower-precision autocast,
registered with transformers' public attention interfaces so that any model can select it by name."""

from __future__ import annotations

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

SDPA_FP32 = "sdpa_fp32"


def sdpa_fp32_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """SDPA on fp32 copies of ``query``, ``key``, ``value``, with the output in the query's dtype. On CPU, torch's
    fused attention kernel is slower in bf16 than in fp32 for small heads (a bf16 ``cpu-2m`` step takes 0.93x the
    time with this; benchmarks/RESULTS.md, section 44); elsewhere it only costs the casts."""
    device = query.device.type
    with torch.autocast(device, enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(query.dtype), weights


AttentionInterface.register(SDPA_FP32, sdpa_fp32_attention)
AttentionMaskInterface.register(SDPA_FP32, sdpa_mask)  # the same masks as 'sdpa'
