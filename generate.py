from minigpt.cli import run
from minigpt.cli.generate import main

raise SystemExit(run(main))
