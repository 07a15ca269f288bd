"""The Hugging Face GPT-2 format in (`pretrained`) and out (`export`), and tokenizer files <-> tiktoken
(`tokenizer`, `regex_dialects`). No Lightning here."""
