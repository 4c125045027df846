"""The model and what it computes: building, initialising or loading a LLaMA, the loss, the optimizer,
FLOP counts, generation, evaluation and the instruction score."""
