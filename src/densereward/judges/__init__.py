"""LLM judges: grade responses by asking a language model, and the local OpenAI-compatible server
(:mod:`densereward.judges.chat_server`) that lets a judge client run end to end against any
Hugging Face causal LM on this machine."""
