"""`make bench`: run every benchmark of the project, then assemble docs/benchmarks.md.

Each benchmark script writes its own section to bench/results/<topic>.md (with its command,
the machine, medians and side-by-side ratios). This runner runs them in dependency order
(the feature cache first) and joins the sections under one header. `--assemble-only` joins
the sections already there without running anything.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"

# (results file, command) in the order they must run; the first builds the feature cache.
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("cache.md", ["bench/cache_flickr8k.py"]),
    ("conse.md", ["bench/conse_flickr8k.py"]),
    ("embedding.md", ["bench/train_embedding_flickr8k.py"]),
    ("captioner.md", ["bench/train_captioner_flickr8k.py"]),
    ("word2vec.md", ["bench/word2vec_flickr8k.py", "--runs", "3"]),
    ("index.md", ["bench/index_bench.py"]),
    ("search_e2e.md", ["bench/search_e2e.py", "--n", "100000", "--queries", "200", "--rounds", "3",
                       "--clients", "20", "--seconds", "30"]),
    ("ddp.md", ["bench/ddp_gloo.py", "--epochs", "3", "--rounds", "3"]),
    ("fanout.md", ["bench/fanout.py", "--images", "1000", "--rounds", "2"]),
    ("load.md", ["bench/load_test.py"]),
]
# Not run by `make bench` because they need a trained candidate in an imported Flickr8k
# database (their docstrings say how): bench/retrain_overhead.py (retraining.md) and
# bench/promotion_reencode.py (promotion.md).
ORDER = ["models.md", "conse.md", "embedding.md", "captioner.md", "retraining.md", "promotion.md", "index.md", "search_e2e.md",
         "load.md", "scaling.md", "ddp.md", "fanout.md", "word2vec.md", "cache.md"]


def machine() -> str:
    cpus = os.cpu_count()
    mem = ""
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{platform.machine()} {platform.processor() or 'CPU'}, {cpus} cores{mem}, Python {platform.python_version()}"


def run(scripts: list[tuple[str, list[str]]]) -> None:
    for name, cmd in scripts:
        started = time.monotonic()
        print(f"== {' '.join(cmd)}", flush=True)
        result = subprocess.run([sys.executable, *cmd], cwd=ROOT)
        status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
        print(f"== {name}: {status} in {time.monotonic() - started:.0f}s", flush=True)


def assemble() -> None:
    sections = sorted(RESULTS.glob("*.md"), key=lambda p: (ORDER.index(p.name) if p.name in ORDER else 99, p.name))
    head = [
        "# Benchmarks",
        "",
        "Every figure here was measured by the command shown in its section; none is a timed test.",
        "Goals are the issues' goals, never lowered: where a figure misses its goal, the section says so.",
        f"Assembled by `make bench` (`python bench/run_all.py`) on {datetime.now(timezone.utc):%Y-%m-%d}; "
        f"machine: {machine()}, no GPU. The machine is shared and noisy: compare ratios measured side by side.",
        "",
    ]
    body = [p.read_text().rstrip() + "\n" for p in sections]
    DOC.write_text("\n".join(head) + "\n" + "\n".join(body))
    print(f"wrote {DOC} from {len(sections)} sections")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assemble-only", action="store_true")
    parser.add_argument("--only", nargs="*", help="results file names to run, e.g. conse.md")
    args = parser.parse_args()
    if not args.assemble_only:
        run([b for b in BENCHMARKS if not args.only or b[0] in args.only])
        subprocess.run([sys.executable, "bench/plots.py"], cwd=ROOT)  # PNGs from the results above
    assemble()


if __name__ == "__main__":
    main()
