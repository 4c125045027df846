"""Muon for the hidden matrices with AdamW for everything else, as one optimizer Trainer can drive."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, embedding_lr: float | None = None,
                     head_lr: float | None = None) -> dict[str, dict[str, Any]]:
    """The model's trainable parameters by role, each an optimizer group: ``hidden`` (2-D weights inside the blocks),
    ``embeddings``, ``head`` (empty when tied to the embeddings) and ``vectors`` (norms and biases: no weight decay).
    ``embedding_lr`` and ``head_lr`` (None: ``lr``) give those parts their own peak rate."""
    embeddings = list(model.get_input_embeddings().parameters())
    embedding_ids = {id(p) for p in embeddings}
    head = [p for p in model.get_output_embeddings().parameters() if id(p) not in embedding_ids]
    outer = embedding_ids | {id(p) for p in head}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = {
        "hidden": {"params": [p for p in trainable if p.ndim == 2 and id(p) not in outer], "lr": lr,
                   "weight_decay": weight_decay},
        "embeddings": {"params": [p for p in embeddings if p.requires_grad], "lr": embedding_lr or lr,
                       "weight_decay": weight_decay},
        "head": {"params": [p for p in head if p.requires_grad], "lr": head_lr or lr, "weight_decay": weight_decay},
        "vectors": {"params": [p for p in trainable if p.ndim < 2 and id(p) not in outer], "lr": lr,
                    "weight_decay": 0.0},
    }
    return {name: group for name, group in groups.items() if group["params"]}


class MuonWithAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` on the 2-D weights inside the transformer blocks, ``AdamW`` on embeddings, the head and
    norms: the split of the modded-nanogpt speedruns. Muon's step is scaled to AdamW's update size
    (``adjust_lr_fn="match_rms_adamw"``), so one learning rate and one schedule drive both (``embedding_lr`` and
    ``head_lr`` may set those parts' own)."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float,
                 embedding_lr: float | None = None, head_lr: float | None = None):
        groups = parameter_groups(model, lr, weight_decay, embedding_lr, head_lr)
        hidden = groups.pop("hidden")
        self.muon = torch.optim.Muon(hidden["params"], lr=lr, weight_decay=weight_decay,
                                     adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(list(groups.values()), lr=lr, betas=betas, eps=eps)
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
