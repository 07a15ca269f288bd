"""Data preparation speed: MB of text per second and peak memory, per tokenizer, on a generated corpus.

Each tokenizer prepares the same text in a fresh process with an empty cache, so the figures include
reading, fingerprinting, tokenizing and writing the shards (and, for bpe:N, training the vocabulary).
Usage: python bench/bench_prepare.py [--mb 200] [--tokenizers bytes bpe:2048] [--source FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

CHILD = """
import json, resource, sys, time
from pathlib import Path
from minigpt.data.prepare import prepare
start = time.perf_counter()
prepared = prepare(sys.argv[1], sys.argv[2], Path(sys.argv[3]), progress=False)
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
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="text to repeat (default: tiny-shakespeare)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = corpus(Path(tmp), args.mb, args.source)
        size = path.stat().st_size
        print(f"corpus: {size / 1e6:.0f} MB of {args.source.name if args.source.is_file() else 'generated text'}")
        for spec in args.tokenizers:
            cache = Path(tmp) / f"cache-{spec.replace(':', '-')}"
            done = subprocess.run([sys.executable, "-c", CHILD, str(path), spec, str(cache)], capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{spec:>10}: {size / 1e6 / result['seconds']:7.1f} MB/s ({result['seconds']:.1f} s, "
                f"{result['tokens'] / result['seconds'] / 1e6:.1f} M tokens/s), peak memory {result['peak'] / 1e6:,.0f} MB "
                f"= {result['peak'] / size:.1f}x the corpus"
            )


if __name__ == "__main__":
    main()
