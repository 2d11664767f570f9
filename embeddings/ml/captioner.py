"""Caption decoders over frozen image features (EfficientNet-Lite0: pooled (B, 1280), spatial (B, 49, 1280)).

Two decoder families share one step interface, so training, greedy decoding and beam search
(``embeddings.ml.caption_decoding``) know nothing of the family:

- ``show_tell`` (Vinyals et al. 2015, "Show and Tell"): an LSTM conditioned on the pooled
  vector, which sets the initial state and is fed again with every word ("par-inject").
- ``attention`` (Xu et al. 2015, "Show, Attend and Tell", soft attention): an LSTM that, at each
  step, attends over the 7x7 = 49 spatial cells with additive attention, gates the context with
  a sigmoid of the hidden state (beta), and predicts words from a "deep output"
  ``W_o(E y + L_h h + L_z z)``. Attention weights are returned for the doubly stochastic
  regulariser.

Interface (all tensors batch-first, so beam search can repeat/reorder rows):
``encode(pooled, spatial) -> memory``; ``init_state(memory) -> state``;
``step(tokens, state, memory) -> (logits, state, alpha)``; ``forward`` runs teacher forcing
(optionally with scheduled sampling; ``packed=True`` returns only the logits of real positions,
computed by one output-layer product over all of them). ``caption_loss`` returns named loss parts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embeddings.ml.config_dict import dataclass_from_dict
from embeddings.ml.vocab import PAD_ID, SPECIAL_TOKENS

DecoderKind = Literal["show_tell", "attention"]
State = tuple[Tensor, ...]
Memory = tuple[Tensor, ...]


@dataclass(frozen=True)
class CaptionerConfig:
    """Architecture of a caption decoder; stored inside its checkpoint."""

    decoder: DecoderKind = "attention"  # "show_tell" (pooled) or "attention" (49 cells)
    vocab_size: int = 0  # tokens incl. the 4 specials; 0 = not yet known (set from the Vocabulary)
    feature_dim: int = 1280  # image feature channels (EfficientNet-Lite0 head)
    num_cells: int = 49  # spatial cells (7x7) the attention decoder attends over
    # Sizes tuned for CPU training on Flickr8k (bench/results/captioner.md): 256-d words and
    # image cells with a 512-d LSTM trained ~2x faster than all-512 per epoch.
    embed_dim: int = 256  # word embedding size
    hidden_dim: int = 512  # LSTM state size
    context_dim: int = 256  # image features are projected to this size once per image
    attention_dim: int = 256  # additive-attention hidden size
    dropout: float = 0.5  # on projected features and before the output layer
    tie_embeddings: bool = True  # output layer reuses the word embedding matrix (small data)
    max_len: int = 20  # longest generated caption, in tokens, <eos> included

    def __post_init__(self) -> None:
        if self.vocab_size != 0 and self.vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)} (or be 0 = unset), got {self.vocab_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if min(self.embed_dim, self.hidden_dim, self.context_dim, self.attention_dim, self.max_len) < 1:
            raise ValueError("sizes and max_len must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaptionerConfig:
        """Strict: unknown keys or mistyped values raise ValueError."""
        return dataclass_from_dict(cls, data)


class _DecoderBase(nn.Module):
    """Word embedding, output layer, teacher-forcing loop; subclasses define encode/step."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD_ID)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.embed_dim, config.vocab_size)
        if config.tie_embeddings:
            self.out.weight = self.embed.weight
        nn.init.normal_(self.embed.weight, std=config.embed_dim**-0.5)
        with torch.no_grad():
            self.embed.weight[PAD_ID].zero_()

    def encode(self, pooled: Tensor, spatial: Tensor | None) -> Memory:
        raise NotImplementedError

    def init_state(self, memory: Memory) -> State:
        raise NotImplementedError

    def step_hidden(self, tokens: Tensor, state: State, memory: Memory) -> tuple[Tensor, State, Tensor | None]:
        """One step up to the output layer: (dropped-out deep output (B, E), state, alpha)."""
        raise NotImplementedError

    def step(self, tokens: Tensor, state: State, memory: Memory) -> tuple[Tensor, State, Tensor | None]:
        hidden, state, alpha = self.step_hidden(tokens, state, memory)
        return self.out(hidden), state, alpha  # (B, V)

    def forward(
        self,
        pooled: Tensor,
        spatial: Tensor | None,
        inputs: Tensor,
        *,
        image_index: Tensor | None = None,
        lengths: Tensor | None = None,
        sampling_prob: float = 0.0,
        generator: torch.Generator | None = None,
        packed: bool = False,
    ) -> dict[str, Tensor]:
        """Teacher forcing: ``inputs`` (B, T) start with <bos>; returns logits (B, T, V).

        ``image_index`` (B,) maps caption rows to rows of ``pooled``/``spatial`` (I images), so
        an image with five captions is projected once, not five times. ``lengths`` (B,), sorted
        in decreasing order, is the number of real input positions per row: step t then runs
        only the rows still active (a prefix of the batch), so padding costs nothing; logits
        and attention at padded positions are zero (the loss ignores them).

        With ``sampling_prob`` > 0 (scheduled sampling, Bengio et al. 2015) each input token
        after the first is replaced, with that probability, by the model's own sampled
        prediction from the previous step (no gradient flows through the choice).

        ``packed`` (with ``lengths``, without scheduled sampling) returns ``packed_logits`` (S, V)
        for the S real positions only, time-major (step t's active rows, then step t+1's), with
        ``packed_rows`` / ``packed_steps`` (S,) naming each one's row and step: the output layer
        runs once over all of them, and no (B, T, V) padding is built. Same values as ``logits``
        at those positions (the same dropout draws, in the same order).
        """
        if packed and (lengths is None or sampling_prob > 0.0):
            raise ValueError("packed teacher forcing needs lengths and no scheduled sampling")
        memory = self.encode(pooled, spatial)  # (I, ...)
        if image_index is not None:
            memory = tuple(m.index_select(0, image_index) for m in memory)  # (B, ...)
        state = self.init_state(memory)
        batch, steps = inputs.shape
        active = [batch] * steps
        if lengths is not None:
            if bool((lengths[1:] > lengths[:-1]).any()):
                raise ValueError("lengths must be sorted in decreasing order")
            active = [int(n) for n in (lengths.unsqueeze(0) > torch.arange(steps).unsqueeze(1)).sum(1)]
        logits: list[Tensor] = []
        hiddens: list[Tensor] = []  # packed: (n_t, E) per step
        alphas: list[Tensor] = []
        tokens = inputs[:, 0]  # (B,)
        for t in range(steps):
            n = active[t]
            if n == 0:
                break
            if t > 0:
                tokens = inputs[:n, t]
                if sampling_prob > 0.0:
                    tokens = self._mix_sampled(tokens, logits[-1][:n], sampling_prob, generator)
            state = tuple(s[:n] for s in state)
            hidden, state, alpha = self.step_hidden(tokens, state, tuple(m[:n] for m in memory))
            if packed:
                hiddens.append(hidden)
            else:
                logits.append(F.pad(self.out(hidden), (0, 0, 0, batch - n)))  # (B, V)
            if alpha is not None:
                alphas.append(F.pad(alpha, (0, 0, 0, batch - n)))  # (B, N)
        pad_t = steps - max(len(logits), len(hiddens))
        if packed:
            used = active[: len(hiddens)]
            out = {"packed_logits": self.out(torch.cat(hiddens)),  # (S, V), one product
                   "packed_rows": torch.cat([torch.arange(n, device=inputs.device) for n in used]),  # (S,)
                   "packed_steps": torch.cat([torch.full((n,), t, device=inputs.device)
                                              for t, n in enumerate(used)])}  # (S,)
        else:
            out = {"logits": F.pad(torch.stack(logits, dim=1), (0, 0, 0, pad_t))}  # (B, T, V)
        if alphas:
            out["alphas"] = F.pad(torch.stack(alphas, dim=1), (0, 0, 0, pad_t))  # (B, T, N)
        return out

    @staticmethod
    def _mix_sampled(gold: Tensor, prev_logits: Tensor, prob: float, generator: torch.Generator | None) -> Tensor:
        with torch.no_grad():
            probs = F.softmax(prev_logits.float(), dim=-1)  # (B, V)
            sampled = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(gold.device)
            use = torch.rand(gold.shape, generator=generator).to(gold.device) < prob
            # Never replace padding: it marks finished captions and is ignored by the loss.
            use &= gold != PAD_ID
        return torch.where(use, sampled, gold)


class ShowTellDecoder(_DecoderBase):
    """LSTM conditioned on the pooled feature (initial state + fed at every step)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__(config)
        c = config
        self.image_proj = nn.Linear(c.feature_dim, c.context_dim)
        self.init_h = nn.Linear(c.context_dim, c.hidden_dim)
        self.init_c = nn.Linear(c.context_dim, c.hidden_dim)
        self.lstm = nn.LSTMCell(c.embed_dim + c.context_dim, c.hidden_dim)
        self.hidden_out = nn.Linear(c.hidden_dim, c.embed_dim)

    def encode(self, pooled: Tensor, spatial: Tensor | None) -> Memory:
        image = self.drop(F.relu(self.image_proj(pooled)))  # (B, C)
        return (image,)

    def init_state(self, memory: Memory) -> State:
        (image,) = memory
        return torch.tanh(self.init_h(image)), torch.tanh(self.init_c(image))  # (B, H) x2

    def step_hidden(self, tokens: Tensor, state: State, memory: Memory) -> tuple[Tensor, State, None]:
        (image,) = memory
        emb = self.embed(tokens)  # (B, E)
        h, c = self.lstm(torch.cat([emb, image], dim=-1), state)  # (B, H)
        return self.drop(self.hidden_out(h) + emb), (h, c), None  # (B, E)


class AttentionDecoder(_DecoderBase):
    """Show, Attend and Tell: soft additive attention over the spatial cells at every step."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__(config)
        c = config
        self.cell_proj = nn.Linear(c.feature_dim, c.context_dim)
        self.cell_att = nn.Linear(c.context_dim, c.attention_dim)
        self.hidden_att = nn.Linear(c.hidden_dim, c.attention_dim)
        self.att_score = nn.Linear(c.attention_dim, 1)
        self.gate = nn.Linear(c.hidden_dim, c.context_dim)  # beta: how much image to let in
        self.init_h = nn.Linear(c.context_dim, c.hidden_dim)
        self.init_c = nn.Linear(c.context_dim, c.hidden_dim)
        self.lstm = nn.LSTMCell(c.embed_dim + c.context_dim, c.hidden_dim)
        self.hidden_out = nn.Linear(c.hidden_dim, c.embed_dim)  # L_h
        self.context_out = nn.Linear(c.context_dim, c.embed_dim)  # L_z

    def encode(self, pooled: Tensor, spatial: Tensor | None) -> Memory:
        if spatial is None:
            raise ValueError("the attention decoder needs spatial features (B, N, feature_dim)")
        cells = self.drop(F.relu(self.cell_proj(spatial)))  # (B, N, C)
        # Projected once per image, not once per step: the step only adds the hidden term.
        keys = self.cell_att(cells)  # (B, N, A)
        return cells, keys, cells.mean(dim=1)  # (B, N, C), (B, N, A), (B, C)

    def init_state(self, memory: Memory) -> State:
        _, _, mean = memory
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, H) x2

    def step_hidden(self, tokens: Tensor, state: State, memory: Memory) -> tuple[Tensor, State, Tensor]:
        cells, keys, _ = memory
        h_prev, _ = state
        scores = self.att_score(torch.tanh(keys + self.hidden_att(h_prev).unsqueeze(1))).squeeze(-1)  # (B, N)
        alpha = F.softmax(scores, dim=-1)  # (B, N)
        context = torch.bmm(alpha.unsqueeze(1), cells).squeeze(1)  # (B, C)
        context = torch.sigmoid(self.gate(h_prev)) * context  # (B, C)
        emb = self.embed(tokens)  # (B, E)
        h, c = self.lstm(torch.cat([emb, context], dim=-1), state)  # (B, H)
        deep = emb + self.hidden_out(h) + self.context_out(context)  # (B, E)
        return self.drop(deep), (h, c), alpha


CaptionDecoder = _DecoderBase


def build_decoder(config: CaptionerConfig) -> CaptionDecoder:
    """The decoder module ``config.decoder`` names (``vocab_size`` must be set)."""
    if config.vocab_size == 0:
        raise ValueError("CaptionerConfig.vocab_size is unset: build the Vocabulary first")
    if config.decoder == "show_tell":
        return ShowTellDecoder(config)
    if config.decoder == "attention":
        return AttentionDecoder(config)
    raise ValueError(f"unknown decoder {config.decoder!r}")


def caption_loss(
    outputs: Mapping[str, Tensor],
    targets: Tensor,
    *,
    label_smoothing: float = 0.0,
    attention_weight: float = 0.0,
) -> dict[str, Tensor]:
    """Named loss parts for one batch; ``targets`` (B, T) are the inputs shifted by one.

    ``caption_loss``: token-level cross-entropy (with label smoothing), padding ignored; from
    ``packed_logits`` when the forward was packed (the same mean over the same positions).
    ``attention_loss`` (attention decoder, weight > 0): Xu et al.'s doubly stochastic
    regulariser, pushing every cell to receive about one unit of attention over the caption.
    """
    if "packed_logits" in outputs:
        logits = outputs["packed_logits"]  # (S, V)
        flat_targets = targets[outputs["packed_rows"], outputs["packed_steps"]]  # (S,)
    else:
        logits = outputs["logits"].reshape(-1, outputs["logits"].shape[-1])  # (B*T, V)
        flat_targets = targets.reshape(-1)
    loss = F.cross_entropy(logits.float(), flat_targets, ignore_index=PAD_ID, label_smoothing=label_smoothing)
    parts = {"caption_loss": loss}
    if attention_weight > 0.0 and "alphas" in outputs:
        alphas = outputs["alphas"].float() * (targets != PAD_ID).unsqueeze(-1)  # (B, T, N)
        parts["attention_loss"] = attention_weight * ((1.0 - alphas.sum(dim=1)) ** 2).mean()
    return parts
