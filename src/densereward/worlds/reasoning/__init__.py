"""The reasoning world: step-verifiable tasks, a local tokenizer, exporters, and the pieces that
put a small Hugging Face causal LM to work on them."""
