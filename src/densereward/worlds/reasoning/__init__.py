"""The reasoning world: step-verifiable tasks, a local tokenizer, exporters, the pieces that put a
small Hugging Face causal LM to work on them, and ``ReasoningWorld``, the ``World`` that trains
it with GRPO."""
