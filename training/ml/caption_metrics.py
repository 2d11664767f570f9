"""Caption quality metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (COCO caption evaluation).

Thin wrapper over ``pycocoevalcap`` (the reference implementation used by captioning papers):

- Every hypothesis is scored against ALL references of its image (five for Flickr8k).
- Text is tokenized like the COCO server: Stanford PTB tokenizer (lowercase) and removal of
  punctuation tokens (``tokenizer="ptb"``, needs Java 17, the jar ships with pycocoevalcap).
  ``tokenizer="simple"`` uses the project tokenizer (``embeddings.ml.vocab.tokenize``) instead;
  it needs no Java and is what in-training evaluation uses for speed. Both drop punctuation;
  they differ only on corner cases such as "dog's" (PTB: "dog 's").
- BLEU uses the "closest" reference length for the brevity penalty (corpus level).
- ``cider_d`` is pycocoevalcap's ``Cider`` class, which implements CIDEr-D (clipped n-gram
  counts, Gaussian length penalty sigma=6, x10), with document frequencies taken from the
  references of the evaluated set.
- METEOR 1.5 runs in a Java subprocess (``-l en -norm``); ``meteor=False`` skips it.
- SPICE is left out: it needs Stanford CoreNLP models that pycocoevalcap downloads on first use,
  and this project runs offline.

All scores are returned on the 0-100 scale papers report (pycocoevalcap value x 100; for
CIDEr-D that gives e.g. 55.0 for a raw 0.550).
"""

from __future__ import annotations

import logging
import shutil
# bandit B404: fixed Java command lines for METEOR, no shell
import subprocess  # nosec B404
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import pycocoevalcap.tokenizer.ptbtokenizer as _ptb_module
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

from embeddings.ml.vocab import tokenize as simple_tokenize

logger = logging.getLogger(__name__)

Tokenizer = Literal["ptb", "simple"]
K = TypeVar("K", bound=Hashable)  # an image key, the same type in hypotheses and references
METRIC_NAMES: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")

# pycocoevalcap is a namespace package (no __file__); locate the jar next to its tokenizer module.
_PTB_JAR = Path(_ptb_module.__file__).parent / _ptb_module.STANFORD_CORENLP_3_4_1_JAR
_PUNCTUATION = frozenset(PUNCTUATIONS)


class MetricUnavailable(RuntimeError):
    """A metric needs a tool (Java) that is not installed."""


def java_available() -> bool:
    """True when a ``java`` executable is on PATH (PTB tokenizer and METEOR need it)."""
    return shutil.which("java") is not None


def _require_java(what: str) -> None:
    if not java_available():
        raise MetricUnavailable(f"{what} needs Java 17 ('java' not found on PATH)")


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """Tokenize like the COCO evaluation server: PTB tokens, lowercased, punctuation removed.

    Unlike ``pycocoevalcap``'s PTBTokenizer, the temporary file goes to the system temp folder,
    not into site-packages, so a read-only install works.
    """
    _require_java("PTB tokenization")
    if not sentences:
        return []
    lines = [s.replace("\n", " ").replace("\r", " ") for s in sentences]
    with tempfile.TemporaryDirectory(prefix="loupe-ptb-") as folder:
        path = Path(folder) / "sentences.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd = ["java", "-cp", str(_PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(path)]
        # bandit B603: argument list, no shell
        done = subprocess.run(cmd, capture_output=True, check=True)  # nosec B603
    out = done.stdout.decode("utf-8").split("\n")
    if len(out) < len(lines):
        raise RuntimeError(f"PTB tokenizer returned {len(out)} lines for {len(lines)} sentences")
    return [" ".join(w for w in line.rstrip().split(" ") if w and w not in _PUNCTUATION)
            for line in out[: len(lines)]]


def _tokenize_all(sentences: list[str], tokenizer: Tokenizer) -> list[str]:
    if tokenizer == "ptb":
        return ptb_tokenize(sentences)
    if tokenizer == "simple":
        return [" ".join(simple_tokenize(s)) for s in sentences]
    raise ValueError(f"unknown tokenizer {tokenizer!r} (expected 'ptb' or 'simple')")


def _prepare(
    hypotheses: Mapping[K, str],
    references: Mapping[K, Sequence[str]],
    tokenizer: Tokenizer,
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Tokenize in one batch and re-key by position (pycocoevalcap wants equal key sets)."""
    keys = list(hypotheses)
    missing = [k for k in keys if k not in references or not references[k]]
    if missing:
        raise ValueError(f"{len(missing)} hypotheses have no references, e.g. {missing[0]!r}")
    flat = [hypotheses[k] for k in keys]
    spans = []
    for k in keys:
        start = len(flat)
        flat.extend(references[k])
        spans.append((start, len(flat)))
    tokens = _tokenize_all(flat, tokenizer)
    res = {i: [tokens[i]] for i in range(len(keys))}
    gts = {i: tokens[a:b] for i, (a, b) in enumerate(spans)}
    return gts, res


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    _require_java("METEOR")
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:
        # Stop the JVM now rather than at garbage collection (Meteor.__del__ repeats this
        # harmlessly: closing a closed pipe and killing a reaped process are no-ops).
        process = scorer.meteor_p
        process.stdin.close()
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    return float(score)


def caption_scores(
    hypotheses: Mapping[K, str],
    references: Mapping[K, Sequence[str]],
    *,
    tokenizer: Tokenizer = "ptb",
    meteor: bool = True,
) -> dict[str, float]:
    """Score one hypothesis per image against all its references.

    ``hypotheses`` maps an image key to its generated caption; ``references`` maps the same keys
    (and possibly more, which are ignored) to the reference captions. Returns ``bleu_1`` ..
    ``bleu_4``, ``rouge_l``, ``cider_d`` and, when ``meteor`` is true, ``meteor``; all x100.
    Raises ``MetricUnavailable`` if Java is needed (PTB tokenizer, METEOR) and absent.
    """
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    gts, res = _prepare(hypotheses, references, tokenizer)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu_{n + 1}": 100.0 * float(b) for n, b in enumerate(bleu)}
    if meteor:
        scores["meteor"] = 100.0 * _meteor(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    scores["rouge_l"] = 100.0 * float(rouge)
    cider, _ = Cider().compute_score(gts, res)
    scores["cider_d"] = 100.0 * float(cider)
    logger.debug("caption scores over %d images: %s", len(res), scores)
    return scores
