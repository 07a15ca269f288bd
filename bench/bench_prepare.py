"""Data preparation speed: MB of text per second and peak memory, per tokenizer, on a generated corpus.

Each tokenizer prepares the same text in a fresh process with an empty cache, so the figures include
reading, fingerprinting, tokenizing and writing the shards (and, for bpe:N, training the vocabulary).
``hf-bpe:N`` is a byte-level BPE of N tokens trained on the text, written as a Hugging Face tokenizer folder and
loaded back from it (as ``--tokenizer`` of a pretrained model's folder would be): its figures are tokenizing only.
With ``--rounds`` above 1 the tokenizers take turns, round after round, so that a machine shared with other work
slows them alike; compare the figures of one round.
Usage: python bench/bench_prepare.py [--mb 200] [--tokenizers bytes bpe:2048 hf-bpe:2048] [--rounds 1] [--source FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

CHILD = """
import json, resource, sys, time
from pathlib import Path
from minigpt import tokenizer as tok
from minigpt.data.prepare import prepare
from minigpt.hf import tokenizer as hf_tokenizer
corpus, spec, cache = sys.argv[1], sys.argv[2], Path(sys.argv[3])
enc = None
if spec.startswith("hf-bpe:"):
    with open(corpus, encoding="utf-8") as f:
        trained = tok.build_tokenizer(spec.removeprefix("hf-"), [f.read(8 << 20)])
    hf_tokenizer.save(trained, cache / "hf-tokenizer")
    enc = hf_tokenizer.load(cache / "hf-tokenizer")
start = time.perf_counter()
prepared = prepare(corpus, spec, cache, progress=False, tokenizer=enc)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak": peak, "tokens": prepared.meta.train.tokens + prepared.meta.val.tokens}))
"""


def corpus(folder: Path, megabytes: int, source: Path) -> Path:
    """`megabytes` MB of text: `source` repeated (a real text's mix of words, lines and punctuation)."""
    text = source.read_text() if source.is_file() else "the quick brown fox jumps over the lazy dog.\n" * 20_000
    path = folder / "corpus.txt"
    with path.open("w") as f:
        written = 0
        while written < megabytes * 1_000_000:
            f.write(text)
            written += len(text.encode())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MB")
    parser.add_argument("--tokenizers", nargs="+", default=["bytes", "bpe:2048"])
    parser.add_argument("--rounds", type=int, default=1, help="times each tokenizer runs, taking turns")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="text to repeat (default: tiny-shakespeare)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = corpus(Path(tmp), args.mb, args.source)
        size = path.stat().st_size
        print(
            f"corpus: {size / 1e6:.0f} MB of {args.source.name if args.source.is_file() else 'generated text'}, "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
        )
        for round_ in range(args.rounds):
            for spec in args.tokenizers:
                cache = Path(tmp) / f"cache-{spec.replace(':', '-')}-{round_}"
                cache.mkdir()
                command = [sys.executable, "-c", CHILD, str(path), spec, str(cache)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{spec:>12}: {size / 1e6 / result['seconds']:7.1f} MB/s ({result['seconds']:.1f} s, "
                    f"{result['tokens'] / result['seconds'] / 1e6:.1f} M tokens/s), peak memory "
                    f"{result['peak'] / 1e6:,.0f} MB = {result['peak'] / size:.1f}x the corpus"
                    + (f", round {round_ + 1}" if args.rounds > 1 else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
