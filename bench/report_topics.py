"""The topics of docs/benchmarks.md: where each figure is read from, and its goal (see bench/report.py).

One function per topic turns its results file into a `Section`. Extractors read what the benchmark
script itself writes (its phrases and tables, or its raw JSON), so a re-run changes the summary
without anyone editing it; scripts that append to their results file are read at their last run.
Goals are written here once, as the issues state them, and never lowered.
"""
from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
SUMMARY = re.compile(r"<!-- summary\b[^>]*-->\n(.*?)\n<!-- /summary -->", re.S)
HEADER = "| figure | measured | goal | met? | date | command |"
NUM = r"\d+(?:\.\d+)?"  # a figure, without a sentence's full stop


@dataclass(frozen=True)
class Goal:
    op: str  # ">=", "<=", "<" or "=="
    target: float
    text: str  # as the issue states it, e.g. "<= 10 min"
    unit: str = ""  # unit of the gap, in the measured figure's unit (" s", "x")


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str  # printed as the results file prints it
    value: float | None  # what the goal is judged on
    goal: Goal | None
    date: str
    command: str


@dataclass
class Section:
    title: str
    files: list[str]  # results files it comes from, linked under the table
    rows: list[Row] = field(default_factory=list)
    block: str | None = None  # a summary block copied verbatim, instead of rows
    notes: list[str] = field(default_factory=list)
    plots: list[tuple[str, Path]] = field(default_factory=list)
    design: str | None = None  # docs/design/<name>


@dataclass
class Context:
    """The results folder, its measured.json (dates and machines) and the warnings met on the way."""

    results: Path
    machine: str
    measured: dict[str, dict[str, str]]
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, results: Path) -> Context:
        data = json.loads((results / "measured.json").read_text())
        return cls(results=results, machine=data["machine"], measured=data["results"])

    def text(self, name: str) -> str:
        return (self.results / name).read_text()

    def date(self, name: str) -> str:
        entry = self.measured.get(name)
        if not entry:
            self.warnings.append(f"bench/results/measured.json has no date for {name}")
            return "undated"
        machine = entry.get("machine")
        return entry["date"] if not machine or machine == self.machine else f"{entry['date']}, on {machine}"


def decimals(measured: str) -> int:
    m = re.search(r"\d[\d,]*(?:\.(\d+))?", measured)
    return len(m.group(1)) if m and m.group(1) else 0


def verdict(row: Row) -> str:
    """met / **missed** by the gap / reported (no goal, or nothing to judge)."""
    goal, value = row.goal, row.value
    if goal is None or value is None:
        return "reported"
    ok = {">=": value >= goal.target, "<=": value <= goal.target, "<": value < goal.target,
          "==": value == goal.target}[goal.op]
    if ok:
        return "met"
    return f"**missed** by {abs(value - goal.target):,.{decimals(row.measured)}f}{goal.unit}"


def met_counts(section: Section) -> tuple[int, int]:
    """(goals met, goals missed) of a section, from its rows or its summary block's met? column."""
    if section.block is None:
        verdicts = [verdict(r) for r in section.rows]
    else:
        lines = [line for line in section.block.splitlines() if line.startswith("|")]
        header = lines[0].split("|") if lines else []
        col = next((i for i, c in enumerate(header) if c.strip() == "met?"), None)
        verdicts = [] if col is None else [line.split("|")[col].strip() for line in lines[2:]
                                           if len(line.split("|")) > col]
    return (sum(v.startswith("met") for v in verdicts), sum("missed" in v.lower() for v in verdicts))


def need(pattern: str, text: str, name: str, flags: int = 0) -> re.Match[str]:
    """The LAST match of `pattern` (the latest run of an appending script); an error if none."""
    matches = list(re.finditer(pattern, text, flags))
    if not matches:
        raise ValueError(f"bench/results/{name}: no match for {pattern!r}; the script's output changed, "
                         "update bench/report_topics.py")
    return matches[-1]


def command(text: str, name: str) -> str:
    return need(r"Command(?: \([^)]*\))?: `([^`]+)`", text, name).group(1)


def table(text: str, header_start: str, name: str) -> list[list[str]]:
    """Cells of the data rows of the last table whose header starts with `header_start`."""
    start = need(re.escape(header_start), text, name).start()
    lines = text[start:].split("\n\n", 1)[0].splitlines()[2:]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]


def block_section(ctx: Context, name: str, design: str | None = None,
                  plots: list[tuple[str, Path]] | None = None) -> Section:
    """A topic summarised by hand (or by a benchmark with no extractor): its summary block, verbatim."""
    text = ctx.text(name)
    heading = re.search(r"^## (.+)$", text, re.M)
    title = heading.group(1).strip() if heading else name
    m = SUMMARY.search(text)
    if not m:
        ctx.warnings.append(f"bench/results/{name} has no <!-- summary --> block: only linked")
        block = f"No summary block in `bench/results/{name}` yet: see the file."
    else:
        block = m.group(1).strip()
        if HEADER not in block:
            ctx.warnings.append(f"bench/results/{name}: the summary block has no table headed {HEADER}")
    return Section(title=title, files=[name], block=block, plots=plots or [], design=design)


def models(ctx: Context) -> Section:
    return block_section(ctx, "models.md", design="captioner-decoding.md")


def conse(ctx: Context) -> Section:
    name = "conse.md"
    text, date = ctx.text(name), ctx.date(name)
    cmd = command(text, name)
    m = need(rf"Best by rsum: prompts=(\S+), k=(\d+), T=({NUM}): T2I R@1 ({NUM}), I2T R@1 ({NUM}), rsum ({NUM})",
             text, name)
    rows = [
        Row(f"T2I R@1, the sweep's best setting by rsum (prompts={m[1]}, k={m[2]}, T={m[3]})", m[4],
            float(m[4]), Goal(">=", 5, "report; >= ~5"), date, cmd),
        Row("I2T R@1, same setting", m[5], float(m[5]), Goal(">=", 3, "report; >= ~3"), date, cmd),
        Row("rsum, same setting", m[6], None, None, date, cmd),
    ]
    notes = ["Chosen and reported on the dev split (1,000 images, 5,000 captions; no test split here)."]
    return Section("ConSE v0 zero-shot retrieval, Flickr8k dev", [name], rows, notes=notes)


def embedding(ctx: Context) -> Section:
    name = "embedding.md"
    text, date = ctx.text(name), ctx.date(name)
    cmd = command(text, name)
    rows = table(text, "| model | T2I R@1 |", name)
    pick = next((r for r in rows if r[0].startswith("**median")), rows[0])
    label = pick[0].strip("*").replace(" (dev)", "")
    slowest = need(rf"slowest seed ({NUM}) s", text, name)[1]
    peak = need(r"ru_maxrss\): ([\d,]+) MiB", text, name)[1]
    out = [
        Row(f"T2I R@1, dev ({label})", pick[1], float(pick[1]), Goal(">=", 20, ">= 20"), date, cmd),
        Row(f"I2T R@1, dev ({label})", pick[5], float(pick[5]), Goal(">=", 25, ">= 25"), date, cmd),
        Row("training loop, slowest seed (features cached, per-epoch dev evaluation included)", f"{slowest} s",
            float(slowest), Goal("<=", 600, "<= 10 min", " s"), date, cmd),
        Row("peak resident memory of the script", f"{peak} MiB", None, None, date, cmd),
    ]
    plot = ("Training loss and dev R@1 per epoch of this recipe's manage.py train run (embedding-flickr8k, "
            "the shipped embedding until 2026-12-02)", IMG / "embedding_training.png")
    return Section("Joint embedding recipe on Flickr8k (benchmark script, cached features)", [name], out,
                   plots=[plot], design="embedding.md")


def captioner(ctx: Context) -> Section:
    name = "captioner.md"
    report = json.loads((ctx.results / "captioner.json").read_text())
    date, cmd = ctx.date(name), report["command"]
    finals = [f for f in report["finals"] if f["beam"] > 1 and not f["tag"]] or report["finals"]
    best = finals[-1]
    s = best["scores"]
    setting = f"beam {best['beam']}, length penalty {best['alpha']}, no-repeat {best['ngram']}"

    def score(key: str, label: str, goal: Goal | None) -> Row:
        v = s.get(key)
        return Row(f"{label}, dev ({setting})", "not measured" if v is None else f"{v:.1f}",
                   None if v is None else round(v, 1), goal, date, cmd)

    rows = [score("bleu_4", "BLEU-4", Goal(">=", 21, ">= 21")), score("meteor", "METEOR", Goal(">=", 19, ">= 19")),
            score("cider_d", "CIDEr-D", None),
            Row("training wall time", f"{report['train_s']:.0f} s", None, None, date, cmd)]
    return Section("Caption generator on Flickr8k (benchmark script)", [name], rows, design="captioner-decoding.md")


def retraining(ctx: Context) -> Section:
    name = "retraining.md"
    text, date = ctx.text(name), ctx.date(name)
    runs = list(re.finditer(r"Command: `([^`]+)`.*?Data: ([^\n]*).*?Median ratio ([\d.]+) \(goal >= 0\.95\); "
                            r"median job wall ([\d.]+) s for (\d+) epoch\(s\)", text, re.S))
    if not runs:
        need(r"Median ratio ([\d.]+) \(goal >= 0\.95\)", text, name)  # raises with the file named
    full = [r for r in runs if "Retrain form's defaults" in r[2]]
    m = (full or runs)[-1]
    wall_goal = Goal("<=", 300, "<= 5 min", " s") if full else None
    rows = [
        Row("job samples/s / bare loop samples/s (worker path vs the same training in a plain loop), median",
            m[3], float(m[3]), Goal(">=", 0.95, ">= 0.95"), date, m[1]),
        Row(f"job wall time, Retrain button's service call to 'succeeded', {m[5]} epochs"
            + (" (the form's defaults: a full run), median" if full else " (not a full run)"),
            f"{m[4]} s", float(m[4]), wall_goal, date, m[1]),
    ]
    return Section("Retraining from the admin: wall time and job overhead", [name], rows)


def promotion(ctx: Context) -> Section:
    name = "promotion.md"
    text, date = ctx.text(name), ctx.date(name)
    m = need(r"Command: `([^`]+)`(.*?)Median ratio ([\d.]+) \(goal >= 0\.9\) over (\d+) round\(s\)", text, name, re.S)
    size = need(r"(\d+) images, (\d+) captions", m[2], name)
    rates = [float(r[2]) for r in table(m[2], "| round (version) |", name)]
    rows = [
        Row(f"promotion / raw encoding loop, images/s ({size[1]} images, {size[2]} captions), median of {m[4]} rounds",
            m[3], float(m[3]), Goal(">=", 0.9, ">= 0.9"), date, m[1]),
        Row("promotion throughput (chunk tasks, upserts, 2 index builds, flip), median",
            f"{statistics.median(rates):.1f} images/s", None, None, date, m[1]),
    ]
    return Section("Re-encoding on promotion vs the raw encoding loop", [name], rows)


def feature_cache(ctx: Context) -> Section:
    name = "feature_cache.md"
    text, date = ctx.text(name), ctx.date(name)
    cmd = command(text, name)
    rows = []
    for stage, items, seconds, rate in table(text, "| stage | items | seconds | rate |", name):
        timed = f"{seconds} s" if re.fullmatch(r"[\d.]+", seconds) else seconds
        rows.append(Row(stage + (f" ({int(items):,} items)" if items else ""), f"{rate} ({timed})" if
                        timed.endswith(" s") else f"{timed}; {rate}", None, None, date, cmd))
    notes = ["One run per stage on a shared machine: the rates are lower bounds for an idle one."]
    return Section("Flickr8k feature cache (EfficientNet-Lite0 + all-MiniLM-L6-v2, CPU)", [name], rows, notes=notes)


def _params(run: dict[str, Any]) -> str:
    p = run.get("params") or {}
    keep = ("M", "efConstruction", "efSearch", "nlist", "pq_m", "nprobe", "k_factor")
    return ", ".join(f"{k}={p[k]}" for k in keep if k in p)


def index(ctx: Context) -> Section:
    date = ctx.date("index.md")
    rows = []
    for run in sorted(json.loads((ctx.results / "index_raw.json").read_text()), key=lambda r: r["n"]):
        ours, side, n = run["ours"], run.get("side_by_side"), f"{run['n']:,}"
        cmd = ".venv/bin/python " + " ".join(run["argv"])
        rows.append(Row(f"N = {n}: recall@10 of the default index ({ours['index_type']}: {_params(ours)})",
                        f"{ours['recall']:.4f}", ours["recall"], Goal(">=", 0.95, ">= 0.95 (tuning target)"),
                        date, cmd))
        if side:
            for key, how in (("ratio_single", "one query per call, 1 core"), ("ratio_batch", "batched, 2 threads")):
                x = side[key]["ours/hnswlib"]
                rows.append(Row(f"N = {n}: ours / hnswlib queries/s at matched recall, {how} (side by side, "
                                f"{side['rounds']} rounds)", f"{x:.2f}x", round(x, 2), Goal(">=", 1, ">= 1x", "x"),
                                date, cmd))
        rows.append(Row(f"N = {n}: memory of the default index per vector", f"{ours['bytes_per_vector']:,.1f} B",
                        None, None, date, cmd))
    notes = ["Synthetic d = 512 vectors (normalised mixtures of clustered seeds); 1000 held-out queries at 100k, "
             "300 at 1M. Every contender, curve and build time: bench/results/index.md."]
    scaling = ctx.results / "scaling.md"
    if scaling.exists():
        reading = re.search(r"^Reading: (.+)$", scaling.read_text(), re.M)
        notes.append("Extrapolated to 100M and 1B vectors (formulas applied to the measured 1M row, not "
                     "measurements): bench/results/scaling.md." + (f" {reading[1][0].upper()}{reading[1][1:]}"
                                                                    if reading else ""))
    plots = [("Recall@10 against queries/s per index", IMG / "index_recall_qps.png"),
             ("Search latency against the number of vectors, one query per call on one core", IMG / "latency_vs_n.png")]
    return Section("Vector index: search/index vs hnswlib vs exact", ["index.md", "scaling.md"], rows,
                   notes=notes, plots=plots, design="vector-index.md")


def search_e2e(ctx: Context) -> Section:
    return block_section(ctx, "search_e2e.md", design="search-latency.md")


def load(ctx: Context) -> Section:
    name = "load.md"
    text, date = ctx.text(name), ctx.date(name)
    rows, verdicts = [], []
    for part in re.split(r"^### ", text, flags=re.M)[1:]:
        title = part.splitlines()[0].strip()
        cmd = command(part, name)
        s = need(r"- searches: \d+ \(2xx \d+, 429 \d+, 5xx (\d+)\), p50 (\S+(?: ms)?), p95 (\S+(?: ms)?)", part, name)
        u = need(r"- uploads: \d+ \(201 \d+, 429 \d+, 5xx (\d+)\)", part, name)
        a = need(r"- uploads afterwards: (\d+) of (\d+) stored, (\d+) ready, (\d+) with a vector", part, name)
        rate = need(r"requests: \d+ \(([\d.]+)/s\)", part, name)[1]
        lost = int(a[2]) - min(int(a[1]), int(a[3]), int(a[4]))
        fivexx = int(s[1]) + int(u[1])
        rows += [
            Row(f"{title}: 5xx responses (searches and uploads)", str(fivexx), fivexx, Goal("==", 0, "0"), date, cmd),
            Row(f"{title}: uploads lost (a 201 not stored, ready and with a vector after the drain)", str(lost),
                lost, Goal("==", 0, "0"), date, cmd),
            Row(f"{title}: search p50 / p95 under load", f"{s[2]} / {s[3]} ({rate} requests/s in all)",
                None, None, date, cmd),
        ]
        verdicts.append(f"{need(r'- verdict: (?P<v>[A-Z]+)', part, name)['v']} ({title})")
    notes = [f"The script's verdict over every check (5xx, lost uploads, connection errors, the index swap "
             f"under load, problems in the logs): {'; '.join(verdicts)}.",
             "One run of each set-up, not a median: what this shared machine did once, not a capacity."]
    return Section("Load: concurrent searches and uploads on a real stack", [name], rows, notes=notes)


def ddp(ctx: Context) -> Section:
    name = "ddp.md"
    text, date = ctx.text(name), ctx.date(name)
    cmd = command(text, name)
    m = need(r"\*\*Speed-up of 2 ranks over 1 \(median train s\): ([\d.]+)x\*\*; largest parameter difference "
             r"after training, per round: ([^;]+); dev rsum ([\d.]+) \(1 process\) vs ([\d.]+) \(2 ranks\)", text, name)
    diff = max(m[2].split(", "), key=float)
    rows = [
        Row("2 gloo ranks / 1 process, same global batch, training loop (median)", f"{m[1]}x", None, None, date, cmd),
        Row("largest parameter difference between the two arms after training", diff, None, None, date, cmd),
        Row("dev rsum, 1 process vs 2 ranks", f"{m[3]} vs {m[4]}", None, None, date, cmd),
    ]
    notes = ["No goal: two ranks on the same 2 shared cores measure correctness (the same model) and the "
             "all-reduce cost, not a speed-up (docs/scaling.md)."]
    return Section("Data-parallel training: 2 gloo processes vs 1", [name], rows, notes=notes)


def fanout(ctx: Context) -> Section:
    name = "fanout.md"
    text, date = ctx.text(name), ctx.date(name)
    cmd = command(text, name)
    m = need(r"\*\*2 workers / 1 worker \(1 thread each\): ([\d.]+)x to the flip, ([\d.]+)x in the encoding "
             r"phase\*\*", text, name)
    threads = need(r"2 single-thread workers / 1 two-thread worker: ([\d.]+)x", text, name)[1]
    medians = ", ".join(f"{arm} {med}" for arm, _, med, _ in table(text, "| arm |", name))
    rows = [
        Row("2 workers / 1 worker (1 thread each), images/s from the service call to the flip", f"{m[1]}x",
            None, None, date, cmd),
        Row("same, encoding phase only", f"{m[2]}x", None, None, date, cmd),
        Row("2 single-thread workers / 1 worker with 2 threads", f"{threads}x", None, None, date, cmd),
        Row("images/s to the flip, median per arm", medians, None, None, date, cmd),
    ]
    notes = ["No goal; the ideal on 2 free cores is 2x (the index build and flip after the last chunk run once)."]
    return Section("Embedding fan-out: promotion re-encoding with 1 and 2 worker processes", [name], rows, notes=notes)


# (results files the topic claims, builder): reading order. A topic appears when its first file
# exists; any other bench/results/*.md is added after these through its summary block.
TOPICS: list[tuple[list[str], Callable[[Context], Section]]] = [
    (["models.md"], models),
    (["conse.md"], conse),
    (["embedding.md"], embedding),
    (["open_vocab.md"], lambda ctx: block_section(ctx, "open_vocab.md")),
    (["captioner.md"], captioner),
    (["caption_labels.md"], lambda ctx: block_section(ctx, "caption_labels.md")),
    (["retraining.md"], retraining),
    (["promotion.md"], promotion),
    (["ingest.md"], lambda ctx: block_section(ctx, "ingest.md")),
    (["upload_searchable.md"], lambda ctx: block_section(ctx, "upload_searchable.md")),
    (["feature_cache.md"], feature_cache),
    (["index.md", "scaling.md"], index),
    (["search_e2e.md"], search_e2e),
    (["load.md"], load),
    (["ddp.md"], ddp),
    (["fanout.md"], fanout),
    (["word2vec.md"], lambda ctx: block_section(ctx, "word2vec.md", design="word2vec.md")),
    (["hogwild.md"], lambda ctx: block_section(ctx, "hogwild.md")),
]

__all__ = ["TOPICS", "Context", "Goal", "Row", "Section", "block_section", "met_counts", "verdict"]
