"""`make bench`: run every benchmark of the project, then write docs/benchmarks.md.

Each benchmark script writes its detailed results to bench/results/<topic>.md (its command, the
machine, every round, medians and side-by-side ratios). This runner runs them in dependency order
(the feature cache first), records in bench/results/measured.json the date and the machine of each
one that succeeded, draws the plots (bench/plots.py), then runs bench/report.py, which writes the
summary docs/benchmarks.md from bench/results/. `--report-only` runs nothing but the report.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MEASURED = RESULTS / "measured.json"

# (results file, commands) in the order they must run; the first builds the feature cache. The
# arguments are those of the runs docs/benchmarks.md reports.
BENCHMARKS: list[tuple[str, list[list[str]]]] = [
    ("feature_cache.md", [["bench/cache_flickr8k.py", "--threads", "2"]]),
    ("encoder_forward.md", [["bench/encoder_forward.py"]]),
    ("feature_caching.md", [["bench/feature_caching.py", "--encoders", "efficientnet-lite0,efficientnet-lite2"]]),
    ("conse.md", [["bench/conse_flickr8k.py"]]),
    ("embedding.md", [["bench/train_embedding_flickr8k.py", "--seeds", "0,1"]]),
    ("captioner.md", [["bench/train_captioner_flickr8k.py"]]),
    ("word2vec.md", [["bench/word2vec_flickr8k.py", "--runs", "5", "--threads", "2,1"]]),
    ("hogwild.md", [["bench/hogwild_embedding.py", "--rounds", "3", "--epochs", "6"]]),
    ("paragraph.md", [["bench/paragraph_flickr8k.py", "--seeds", "0,1,2", "--sweep"]]),
    ("index.md", [["bench/index_bench.py", "run", "--n", "100000", "--runs", "3", "--nlist", "1024",
                   "--train-max", "65536"],
                  ["bench/index_bench.py", "run", "--n", "1000000", "--runs", "3", "--queries", "300",
                   "--exact-queries", "50", "--ivfpq", "2", "--curve-points", "6", "--nlist", "4096",
                   "--train-max", "200000"],
                  ["bench/index_bench.py", "report"]]),
    ("search_e2e.md", [["bench/search_e2e.py", "--n", "100000", "--queries", "200", "--rounds", "3",
                        "--clients", "20", "--seconds", "30"]]),
    ("ddp.md", [["bench/ddp_gloo.py", "--epochs", "3", "--rounds", "3"]]),
    ("fanout.md", [["bench/fanout.py", "--images", "1000", "--rounds", "2"]]),
    ("load.md", [["bench/load_test.py"]]),
]
# Not run here because they need a trained candidate in an imported Flickr8k database (their
# docstrings say how): bench/retrain_overhead.py (retraining.md) and bench/promotion_reencode.py
# (promotion.md); after running one by hand, add its date to measured.json. search_e2e.py appends
# its run to search_e2e.md: update the summary block at the top of that file from it.


def machine() -> str:
    """This machine in one line, as measured.json records it (bench/report.py prints it once)."""
    mem = ""
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    faiss = next((importlib.metadata.version(d) for d in ("faiss-cpu", "faiss-gpu", "faiss")
                  if _installed(d)), "not installed")
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores{mem}, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, faiss {faiss}")


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def stamp(name: str, where: str) -> None:
    """Record that bench/results/<name> was just measured on `where` (atomic rewrite)."""
    data = json.loads(MEASURED.read_text())
    entry = {"date": f"{datetime.now(UTC):%Y-%m-%d}"}
    if where != data["machine"]:
        entry["machine"] = where
    data["results"][name] = entry
    tmp = MEASURED.with_suffix(".json.part")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, MEASURED)


def run(benchmarks: list[tuple[str, list[list[str]]]]) -> None:
    where = machine()
    for name, commands in benchmarks:
        started = time.monotonic()
        ok = True
        for cmd in commands:
            print(f"== {' '.join(cmd)}", flush=True)
            ok = subprocess.run([sys.executable, *cmd], cwd=ROOT).returncode == 0
            if not ok:
                break
        if ok:
            stamp(name, where)
        print(f"== {name}: {'ok' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", "--assemble-only", action="store_true",
                        help="run no benchmark; only rewrite docs/benchmarks.md from bench/results/")
    parser.add_argument("--only", nargs="*", help="results file names to run, e.g. conse.md")
    args = parser.parse_args()
    if not args.report_only:
        run([b for b in BENCHMARKS if not args.only or b[0] in args.only])
        subprocess.run([sys.executable, "bench/plots.py"], cwd=ROOT)  # PNGs from the results above
    return subprocess.run([sys.executable, "bench/report.py"], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
