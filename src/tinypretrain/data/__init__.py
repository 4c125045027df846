"""From text to training rows: corpora, loading files or hub datasets, tokenizers, tokenize/truncate/pack,
instruction examples, and the collator that turns rows into batches."""
