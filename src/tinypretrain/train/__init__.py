"""One run from start to end: the run() spine, the Trainer subclass, time budgets and signals,
checkpoints and resume, the run folder, and the records and card a run leaves."""
