"""The closest real option to a mistyped one, for the one-line error every command gives an unknown option
(`--max_steps` -> `--trainer.max_steps`). Library code, so that the train command's option resolution
(`minigpt.training.options`) and the other commands' parsers (`minigpt.cli.common`) share it."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Sequence


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    """Every long option of `parser`, as `--name`."""
    return [name for action in parser._actions for name in action.option_strings if name.startswith("--")]


def did_you_mean(unrecognized: Sequence[str], options: Iterable[str]) -> str:
    """'; did you mean --trainer.max_steps?' for the arguments argparse left over (`unrecognized`): the closest
    real option to each unknown one that is close to any; '' when none is."""
    guesses = []
    for arg in unrecognized:
        if arg.startswith("--") and len(arg) > 2:
            name = arg.split("=", 1)[0]
            closest = closest_option(name, options)
            if closest is not None:
                guesses.append((name, closest))
    if len(guesses) == 1:
        return f"; did you mean {guesses[0][1]}?"
    if guesses:
        return "; did you mean " + ", ".join(f"{closest} for {name}" for name, closest in guesses) + "?"
    return ""


def closest_option(name: str, options: Iterable[str]) -> str | None:
    """The option of `options` closest to `name` (difflib's measure), comparing whole names and also their last
    dotted part, so that nanoGPT's and Hugging Face's `--max_steps` finds `--trainer.max_steps`."""
    options = list(options)
    by_spelling = {option: option for option in options}
    for option in options:  # a whole name wins over another option's last part
        by_spelling.setdefault("--" + option.rsplit(".", 1)[-1], option)
    spelling = difflib.get_close_matches(name, by_spelling, n=1)
    return by_spelling[spelling[0]] if spelling else None
