"""Greedy decoding and batched beam search for the caption decoders of ``embeddings.ml.captioner``.

Both work on any object with the decoder step interface (``encode``, ``init_state``, ``step``),
including ``Ensemble``, which averages the word distributions of several decoders.

Beam search keeps ``beam_size`` hypotheses for every image of the batch at once: the decoder
runs on (B * K) rows, candidates are ranked per image over K * V continuations, and rows are
reordered with one ``index_select`` per state tensor. A hypothesis ends when it emits <eos>;
an image is done once ``beam_size`` hypotheses have ended (as in fairseq). Hypotheses are ranked
by ``log_prob / length ** length_penalty`` (length counts <eos>; 0 = raw log-probability, which
favours short captions). ``no_repeat_ngram_size`` n forbids any n-gram from appearing twice.
<pad>, <bos> and (by default) <unk> are never generated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from embeddings.ml.captioner import CaptionDecoder, Memory, State
from embeddings.ml.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    """One decoded caption: token ids without <bos>/<eos>, and its scores."""

    tokens: tuple[int, ...]
    log_prob: float  # sum of token log-probabilities, <eos> included
    score: float  # log_prob / (len(tokens) + 1) ** length_penalty; the ranking key


class Ensemble(torch.nn.Module):
    """Several decoders as one: the step returns log of the mean of their word distributions.

    With ``views`` (one index per member) the inputs carry several feature views of each
    image, pooled (B, V, F) and spatial (B, V, N, F), and member i reads view ``views[i]``:
    ``Ensemble([m, m], views=[0, 1])`` is test-time augmentation over an image and its flip.
    """

    def __init__(self, decoders: Sequence[CaptionDecoder], *, views: Sequence[int] | None = None) -> None:
        super().__init__()
        if not decoders:
            raise ValueError("an ensemble needs at least one decoder")
        if views is not None and len(views) != len(decoders):
            raise ValueError(f"need one view per member, got {len(views)} for {len(decoders)}")
        self.members = torch.nn.ModuleList(decoders)
        self.views = None if views is None else [int(v) for v in views]
        self.config = decoders[0].config
        self._sizes: list[int] = []  # memory tensors per member, set by encode
        self._state_sizes: list[int] = []  # state tensors per member, set by init_state

    @property
    def _decoders(self) -> Sequence[CaptionDecoder]:
        # ModuleList is typed as holding plain Modules; its members are the decoders given above.
        return cast("Sequence[CaptionDecoder]", self.members)

    def encode(self, pooled: Tensor, spatial: Tensor | None) -> Memory:
        if self.views is None:
            memories = [m.encode(pooled, spatial) for m in self._decoders]
        else:
            if pooled.dim() != 3:
                raise ValueError("a multi-view ensemble needs pooled (B, V, F) and spatial (B, V, N, F)")
            memories = [m.encode(pooled[:, v], None if spatial is None else spatial[:, v])
                        for m, v in zip(self._decoders, self.views)]
        self._sizes = [len(mem) for mem in memories]
        return tuple(t for mem in memories for t in mem)

    def _split(self, flat: tuple[Tensor, ...], sizes: list[int]) -> list[tuple[Tensor, ...]]:
        parts, start = [], 0
        for size in sizes:
            parts.append(flat[start : start + size])
            start += size
        return parts

    def init_state(self, memory: Memory) -> State:
        states = [m.init_state(mem) for m, mem in zip(self._decoders, self._split(memory, self._sizes))]
        self._state_sizes = [len(s) for s in states]
        return tuple(t for s in states for t in s)

    def step(self, tokens: Tensor, state: State, memory: Memory) -> tuple[Tensor, State, None]:
        mems = self._split(memory, self._sizes)
        logps: list[Tensor] = []
        new_states: list[Tensor] = []
        for member, mem, st in zip(self._decoders, mems, self._split(state, self._state_sizes)):
            logits, st, _ = member.step(tokens, st, mem)
            logps.append(F.log_softmax(logits.float(), dim=-1))  # (N, V)
            new_states.extend(st)
        mean_logp = torch.logsumexp(torch.stack(logps), dim=0) - math.log(len(logps))  # (N, V)
        return mean_logp, tuple(new_states), None


def _step_log_probs(
    decoder: CaptionDecoder | Ensemble, tokens: Tensor, state: State, memory: Memory, *,
    t: int, max_len: int, block_unk: bool,
) -> tuple[Tensor, State]:
    logits, state, _ = decoder.step(tokens, state, memory)
    logp = F.log_softmax(logits.float(), dim=-1)  # (N, V)
    logp[:, PAD_ID] = _NEG_INF
    logp[:, BOS_ID] = _NEG_INF
    if block_unk:
        logp[:, UNK_ID] = _NEG_INF
    if t == 0:
        logp[:, EOS_ID] = _NEG_INF  # no empty captions
    if t == max_len - 1:
        eos = logp[:, EOS_ID].clone()
        logp.fill_(_NEG_INF)
        logp[:, EOS_ID] = eos  # the last position can only end the caption
    return logp, state


@torch.no_grad()
def greedy_decode(
    decoder: CaptionDecoder | Ensemble,
    pooled: Tensor,
    spatial: Tensor | None,
    *,
    max_len: int | None = None,
    block_unk: bool = True,
) -> list[Hypothesis]:
    """Arg-max decoding for a batch of images; one hypothesis per image."""
    max_len = max_len or decoder.config.max_len
    memory = decoder.encode(pooled, spatial)
    state = decoder.init_state(memory)
    batch = pooled.shape[0]
    tokens = torch.full((batch,), BOS_ID, dtype=torch.long, device=pooled.device)  # (B,)
    done = torch.zeros(batch, dtype=torch.bool, device=pooled.device)
    total = torch.zeros(batch, device=pooled.device)
    steps = []
    for t in range(max_len):
        logp, state = _step_log_probs(decoder, tokens, state, memory, t=t, max_len=max_len, block_unk=block_unk)
        best, tokens = logp.max(dim=-1)  # (B,), (B,)
        total += torch.where(done, torch.zeros_like(best), best)
        tokens = torch.where(done, torch.full_like(tokens, PAD_ID), tokens)
        steps.append(tokens)
        done |= tokens == EOS_ID
        if bool(done.all()):
            break
    out = []
    for row, log_prob in zip(torch.stack(steps, dim=1).tolist(), total.tolist()):
        ids = tuple(row[: row.index(EOS_ID)] if EOS_ID in row else row)
        out.append(Hypothesis(tokens=ids, log_prob=log_prob, score=log_prob))
    return out


def _ban_repeated_ngrams(logp: Tensor, history: list[list[int]], n: int) -> None:
    """In place: forbid tokens that would complete an n-gram already present in the row."""
    if n < 1:
        return
    for row, seq in enumerate(history):
        if len(seq) < n - 1:
            continue
        prefix = tuple(seq[len(seq) - n + 1 :]) if n > 1 else ()
        banned = {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == prefix}
        if banned:
            logp[row, list(banned)] = _NEG_INF


@torch.no_grad()
def beam_search(
    decoder: CaptionDecoder | Ensemble,
    pooled: Tensor,
    spatial: Tensor | None,
    *,
    beam_size: int = 3,
    n_best: int = 1,
    max_len: int | None = None,
    length_penalty: float = 0.0,
    no_repeat_ngram_size: int = 0,
    block_unk: bool = True,
    batch_size: int = 100,
) -> list[list[Hypothesis]]:
    """The ``n_best`` captions of every image, best first; images run ``batch_size`` at a time."""
    if beam_size < 1 or not 1 <= n_best <= beam_size:
        raise ValueError(f"need beam_size >= 1 and 1 <= n_best <= beam_size, got {beam_size}, {n_best}")
    results: list[list[Hypothesis]] = []
    for start in range(0, pooled.shape[0], batch_size):
        chunk_spatial = None if spatial is None else spatial[start : start + batch_size]
        results.extend(
            _beam_chunk(decoder, pooled[start : start + batch_size], chunk_spatial, beam_size=beam_size,
                        n_best=n_best, max_len=max_len or decoder.config.max_len, length_penalty=length_penalty,
                        no_repeat_ngram_size=no_repeat_ngram_size, block_unk=block_unk)
        )
    return results


def _beam_chunk(
    decoder: CaptionDecoder | Ensemble, pooled: Tensor, spatial: Tensor | None, *, beam_size: int, n_best: int,
    max_len: int, length_penalty: float, no_repeat_ngram_size: int, block_unk: bool,
) -> list[list[Hypothesis]]:
    batch, k, device = pooled.shape[0], beam_size, pooled.device
    memory = tuple(m.repeat_interleave(k, dim=0) for m in decoder.encode(pooled, spatial))  # (B*K, ...)
    state = decoder.init_state(memory)
    tokens = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)  # (B*K,)
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = _NEG_INF  # all beams start identical: expand only the first
    history: list[list[int]] = [[] for _ in range(batch * k)]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = [False] * batch
    for t in range(max_len):
        logp, state = _step_log_probs(decoder, tokens, state, memory, t=t, max_len=max_len, block_unk=block_unk)
        _ban_repeated_ngrams(logp, history, no_repeat_ngram_size)
        vocab = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(batch, k * vocab)  # (B, K*V)
        top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)  # (B, 2K): at most K are <eos>
        beam, word = top_idx // vocab, top_idx % vocab  # (B, 2K)
        is_eos = (word == EOS_ID) & torch.isfinite(top_scores)
        _collect_finished(finished, done, history, is_eos[:, :k], top_scores, beam, k, t, length_penalty)
        for b in range(batch):
            done[b] = done[b] or len(finished[b]) >= k
        if all(done):
            break
        # Keep the K best continuations that are not <eos> (stable sort keeps rank order).
        order = torch.sort(is_eos.to(torch.int8), dim=1, stable=True).indices[:, :k]  # (B, K)
        scores = top_scores.gather(1, order)  # (B, K)
        src = (torch.arange(batch, device=device).unsqueeze(1) * k + beam.gather(1, order)).view(-1)  # (B*K,)
        tokens = word.gather(1, order).view(-1)  # (B*K,)
        state = tuple(s.index_select(0, src) for s in state)
        history = [history[i] + [w] for i, w in zip(src.tolist(), tokens.tolist())]
    return [sorted(f, key=lambda h: -h.score)[:n_best] for f in finished]


def _collect_finished(
    finished: list[list[Hypothesis]], done: list[bool], history: list[list[int]], eos: Tensor,
    top_scores: Tensor, beam: Tensor, k: int, t: int, length_penalty: float,
) -> None:
    """Record hypotheses that ended with <eos> among each image's top-K candidates."""
    for b, j in eos.nonzero().tolist():
        if done[b]:
            continue
        log_prob = float(top_scores[b, j])
        tokens = tuple(history[b * k + int(beam[b, j])])
        finished[b].append(Hypothesis(tokens=tokens, log_prob=log_prob,
                                      score=log_prob / float(t + 1) ** length_penalty))
