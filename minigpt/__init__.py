"""minigpt: a small, trainable GPT with self-contained checkpoints, a full sampler and attention inspection."""

__version__ = "0.1.0"
