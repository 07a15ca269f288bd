"""`python -m minigpt` is the `minigpt` command."""

from minigpt.cli.main import entry

if __name__ == "__main__":
    entry()
