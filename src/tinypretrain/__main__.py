"""``python -m tinypretrain`` (also what ``torchrun``/``accelerate launch -m tinypretrain`` run)."""

from .cli import console

console()
