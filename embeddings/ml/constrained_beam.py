"""Constrained beam search (Anderson et al. 2017, "Guided Open Vocabulary Image Captioning with
Constrained Beam Search") over any decoder with the step interface (``encode``, ``init_state``,
``step``) of ``embeddings.ml.caption_decoding``.

A constraint is a *set* of token ids, any one of which satisfies it (a disjunction: "cat" or
"cats"); an image has C constraints (0, 1 or 2 in practice). The finite-state machine has one
state per subset of satisfied constraints (2 ** C states, a bit mask); emitting a token moves a
hypothesis from state s to ``s | bits(token)``; state ``2 ** C - 1`` accepts. Every state keeps
its own beam of K hypotheses, so the decoder runs on B * 2**C * K rows. At each step the K best
continuations *into* each state are kept, whatever state they came from. <eos> is allowed only
in the accepting state, so every finished hypothesis contains the constraints, and the caption
returned is the best finished accepting hypothesis. An image whose accepting state finishes
nothing within the length limit falls back to the unconstrained ``beam_search``. With no
constraints there is one state and the search is ``beam_search``'s.

Words outside the caption vocabulary (``Extension``): each gets an extra id >= V and an
in-vocabulary *stand-in* (a nearby word, e.g. by sentence-encoder similarity). Its output
log-probability is the stand-in's, and when it is fed back the decoder reads the stand-in's
input embedding, in the spirit of Anderson et al.'s fixed word embeddings for unseen tags; the
caption renders the new word. An extra id is only ever emitted to satisfy one of the image's
constraints, at most once.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from embeddings.ml.caption_decoding import (Ensemble, Hypothesis, _ban_repeated_ngrams, _step_log_probs,
                                            beam_search)
from embeddings.ml.captioner import CaptionDecoder
from embeddings.ml.vocab import BOS_ID, EOS_ID

__all__ = ["Extension", "constrained_beam_search"]

_NEG_INF = float("-inf")
MAX_CONSTRAINTS = 3  # 8 FSM states: the cost grows as 2 ** C


@dataclass(frozen=True)
class Extension:
    """Extra output words: id ``vocab_size + i`` is ``words[i]``, read as ``stand_ins[i]``."""

    vocab_size: int
    words: tuple[str, ...] = ()
    stand_ins: tuple[int, ...] = ()
    _ids: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.words) != len(self.stand_ins):
            raise ValueError("need one stand-in per extra word")
        if any(not 0 <= s < self.vocab_size for s in self.stand_ins):
            raise ValueError("stand-ins must be in-vocabulary ids")
        object.__setattr__(self, "_ids", {w: self.vocab_size + i for i, w in enumerate(self.words)})

    def id_of(self, word: str) -> int | None:
        return self._ids.get(word)

    def word_of(self, token: int) -> str:
        return self.words[token - self.vocab_size]

    def read_as(self, tokens: Tensor) -> Tensor:
        """Tokens to feed the decoder: extra ids replaced by their stand-ins."""
        if not self.words:
            return tokens
        table = torch.tensor(self.stand_ins, dtype=tokens.dtype, device=tokens.device)
        extra = tokens >= self.vocab_size
        return torch.where(extra, table[(tokens - self.vocab_size).clamp(min=0, max=len(self.words) - 1)], tokens)


@torch.no_grad()
def constrained_beam_search(
    decoder: CaptionDecoder | Ensemble,
    pooled: Tensor,
    spatial: Tensor | None,
    constraints: Sequence[Sequence[Sequence[int]]],
    *,
    extension: Extension | None = None,
    beam_size: int = 3,
    n_best: int = 1,
    max_len: int | None = None,
    length_penalty: float = 0.0,
    no_repeat_ngram_size: int = 0,
    block_unk: bool = True,
) -> list[list[Hypothesis]]:
    """The ``n_best`` captions of every image that contain one token of each of its constraints
    (``constraints[b]``: a list of token-id sets), best first; fallback as in the module doc."""
    if beam_size < 1 or not 1 <= n_best <= beam_size:
        raise ValueError(f"need beam_size >= 1 and 1 <= n_best <= beam_size, got {beam_size}, {n_best}")
    if len(constraints) != pooled.shape[0]:
        raise ValueError(f"need one constraint list per image, got {len(constraints)} for {pooled.shape[0]}")
    vocab = decoder.config.vocab_size
    ext = extension or Extension(vocab)
    if ext.vocab_size != vocab:
        raise ValueError(f"extension is for a vocabulary of {ext.vocab_size}, the decoder has {vocab}")
    for per_image in constraints:
        if len(per_image) > MAX_CONSTRAINTS:
            raise ValueError(f"at most {MAX_CONSTRAINTS} constraints per image, got {len(per_image)}")
        for alternatives in per_image:
            if not alternatives or any(not 0 <= t < vocab + len(ext.words) for t in alternatives):
                raise ValueError(f"a constraint needs token ids in [0, {vocab + len(ext.words)}): {alternatives}")
    max_len = max_len or decoder.config.max_len
    results = _search(decoder, pooled, spatial, constraints, ext, beam_size=beam_size, n_best=n_best,
                      max_len=max_len, length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                      block_unk=block_unk)
    short = [b for b, hyps in enumerate(results) if len(hyps) < n_best]
    if short:  # no (or too few) accepting hypotheses: the unconstrained beam fills in
        index = torch.tensor(short, device=pooled.device)
        plain = beam_search(decoder, pooled.index_select(0, index),
                            None if spatial is None else spatial.index_select(0, index), beam_size=beam_size,
                            n_best=n_best, max_len=max_len, length_penalty=length_penalty,
                            no_repeat_ngram_size=no_repeat_ngram_size, block_unk=block_unk)
        for b, extra in zip(short, plain):
            seen = {h.tokens for h in results[b]}
            results[b] = results[b] + [h for h in extra if h.tokens not in seen][: n_best - len(results[b])]
    return results


def _token_bits(constraints: Sequence[Sequence[Sequence[int]]], width: int, device: torch.device) -> Tensor:
    """(B, V') int64: bit c set where the token satisfies constraint c of that image."""
    bits = torch.zeros(len(constraints), width, dtype=torch.long)
    for b, per_image in enumerate(constraints):
        for c, alternatives in enumerate(per_image):
            bits[b, list(alternatives)] |= 1 << c
    return bits.to(device)


def _search(
    decoder: CaptionDecoder | Ensemble, pooled: Tensor, spatial: Tensor | None,
    constraints: Sequence[Sequence[Sequence[int]]], ext: Extension, *, beam_size: int, n_best: int,
    max_len: int, length_penalty: float, no_repeat_ngram_size: int, block_unk: bool,
) -> list[list[Hypothesis]]:
    batch, k, device = pooled.shape[0], beam_size, pooled.device
    n_states = 1 << max((len(c) for c in constraints), default=0)  # S
    rows_per_image = n_states * k
    vocab = ext.vocab_size
    width = vocab + len(ext.words)  # V'
    bits = _token_bits(constraints, width, device)  # (B, V')
    accept = torch.tensor([(1 << len(c)) - 1 for c in constraints], device=device)  # (B,)
    # Extra ids an image may emit at all: those in its own constraints.
    extra_ok = bits[:, vocab:] > 0  # (B, V'-V)
    memory = tuple(m.repeat_interleave(rows_per_image, dim=0) for m in decoder.encode(pooled, spatial))
    state = decoder.init_state(memory)
    row_state = torch.arange(n_states, device=device).repeat_interleave(k).repeat(batch)  # (B*S*K,) FSM state
    row_image = torch.arange(batch, device=device).repeat_interleave(rows_per_image)  # (B*S*K,)
    tokens = torch.full((batch * rows_per_image,), BOS_ID, dtype=torch.long, device=device)
    scores = torch.full((batch, n_states, k), _NEG_INF, device=device)
    scores[:, 0, 0] = 0.0  # one live hypothesis: the empty caption in state 0
    history: list[list[int]] = [[] for _ in range(batch * rows_per_image)]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = [False] * batch
    for t in range(max_len):
        logp, state = _step_log_probs(decoder, ext.read_as(tokens), state, memory, t=t, max_len=max_len,
                                      block_unk=block_unk)  # (N, V)
        if ext.words:
            extra = logp[:, list(ext.stand_ins)]  # (N, V'-V): the stand-in's log-probability
            satisfied = (row_state.unsqueeze(1) & bits[row_image, vocab:]) > 0  # already used
            extra = extra.masked_fill(~extra_ok[row_image] | satisfied, _NEG_INF)
            logp = torch.cat([logp, extra], dim=1)  # (N, V')
        _ban_repeated_ngrams(logp, history, no_repeat_ngram_size)
        not_accepting = row_state != accept[row_image]
        logp[not_accepting, EOS_ID] = _NEG_INF  # only the accepting state may finish
        new_state = row_state.unsqueeze(1) | bits[row_image]  # (N, V')
        cand = (scores.view(-1, 1) + logp).view(batch, rows_per_image * width)  # (B, S*K*V')
        new_state = new_state.view(batch, rows_per_image * width)
        next_scores, next_src, next_tok = [], [], []
        for s in range(n_states):
            into = cand.masked_fill(new_state != s, _NEG_INF)
            top_scores, top_idx = into.topk(min(2 * k, into.shape[1]), dim=1)  # (B, 2K)
            src_row, word = top_idx // width, top_idx % width
            is_eos = (word == EOS_ID) & torch.isfinite(top_scores)
            _collect(finished, done, history, is_eos[:, :k], top_scores, src_row, rows_per_image, t,
                     length_penalty)
            order = torch.sort(is_eos.to(torch.int8), dim=1, stable=True).indices[:, :k]  # (B, K) non-eos
            next_scores.append(top_scores.gather(1, order))
            next_src.append(src_row.gather(1, order))
            next_tok.append(word.gather(1, order))
        for b in range(batch):
            done[b] = done[b] or len(finished[b]) >= k
        if all(done):
            break
        scores = torch.stack(next_scores, dim=1)  # (B, S, K)
        src = (torch.arange(batch, device=device).view(batch, 1, 1) * rows_per_image
               + torch.stack(next_src, dim=1)).view(-1)  # (B*S*K,)
        tokens = torch.stack(next_tok, dim=1).view(-1)
        state = tuple(x.index_select(0, src) for x in state)
        history = [history[i] + [w] for i, w in zip(src.tolist(), tokens.tolist())]
        # row_state of the new rows is their slot's state by construction (slot order is s, k).
    return [sorted(f, key=lambda h: -h.score)[:n_best] for f in finished]


def _collect(
    finished: list[list[Hypothesis]], done: list[bool], history: list[list[int]], eos: Tensor,
    top_scores: Tensor, src_row: Tensor, rows_per_image: int, t: int, length_penalty: float,
) -> None:
    """Record hypotheses that ended with <eos> among a state's top-K candidates of each image."""
    for b, j in eos.nonzero().tolist():
        if done[b]:
            continue
        log_prob = float(top_scores[b, j])
        tokens = tuple(history[b * rows_per_image + int(src_row[b, j])])
        finished[b].append(Hypothesis(tokens=tokens, log_prob=log_prob,
                                      score=log_prob / float(t + 1) ** length_penalty))
