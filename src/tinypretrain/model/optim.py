"""Muon for the hidden matrices with AdamW for everything else, as one optimizer Trainer can drive."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class MuonWithAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` on the 2-D weights inside the transformer blocks, ``AdamW`` on embeddings, the head and
    norms: the split of the modded-nanogpt speedruns. Muon's step is scaled to AdamW's update size
    (``adjust_lr_fn="match_rms_adamw"``), so one learning rate and one schedule drive both."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float):
        outer = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) for p in m.parameters()}
        hidden, matrices, vectors = [], [], []
        for param in model.parameters():
            if not param.requires_grad:
                continue
            if param.ndim == 2 and id(param) not in outer:
                hidden.append(param)
            else:
                (matrices if param.ndim >= 2 else vectors).append(param)
        self.muon = torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(
            [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}],
            lr=lr,
            betas=betas,
            eps=eps,
        )
        # The groups are shared dicts, so a scheduler that sets group["lr"] here sets it in both optimizers.
        super().__init__([*self.muon.param_groups, *self.adamw.param_groups], defaults={"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
