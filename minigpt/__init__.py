"""minigpt: a small, trainable GPT with self-contained checkpoints, a full sampler and attention inspection.

The Python API (see `minigpt.api`)::

    import minigpt
    run = minigpt.train("shakespeare_cpu", data="input.txt")   # the run the `minigpt train` command makes
    lm = minigpt.load(run)                                     # a checkpoint, run folder, GPT-2 folder or hf:ID
    lm.generate("ROMEO:", max_new_tokens=100)
    lm.attention("To be, or not to be")                        # inline in Jupyter; .save(), .ablate()

The names below are imported on first use, so `import minigpt` is fast and imports neither torch nor Lightning;
only `train` (and `TrainConfig.load`, which checks the Trainer's options) imports Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "load": "minigpt.api",
    "train": "minigpt.api",
    "MiniGPT": "minigpt.api",
    "Attention": "minigpt.inspection.attention",
    "Evaluation": "minigpt.evaluate",
    "TrainConfig": "minigpt.training.config",
    "SamplingSettings": "minigpt.sample",
    "MiniGPTError": "minigpt.errors",
}
__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports each on first use
    from minigpt.api import MiniGPT, load, train  # noqa: F401
    from minigpt.errors import MiniGPTError  # noqa: F401
    from minigpt.evaluate import Evaluation  # noqa: F401
    from minigpt.inspection.attention import Attention  # noqa: F401
    from minigpt.sample import SamplingSettings  # noqa: F401
    from minigpt.training.config import TrainConfig  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
