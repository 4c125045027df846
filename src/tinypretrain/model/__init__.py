"""The model and what it computes: building and initialising a LLaMA, the loss, the optimizer, FLOP counts,
generation and evaluation."""
