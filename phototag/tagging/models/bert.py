"""The BERT parts of RAM / RAM++ / Tag2Text, with the official key names and no transformers dependency.

Written from the description of ``ram/models/bert.py`` (BLIP's "MED" BERT, itself from
transformers 4.15) so that the official state dicts load with ``strict=True``:

* :class:`BertModel` with ``embeddings=False`` and ``self_attention=False`` is the **tagging head**
  (Query2Label style): per layer ``LN(h + O(CrossAttn(h, image)))`` then ``LN(h + FFN(h))``; 2 layers,
  4 heads of 192. Label queries go in directly (no embeddings, no self-attention between labels).
* :class:`BertModel` with everything is the Tag2Text **tag encoder**: word + absolute position
  embeddings (no token types) → LN, then per layer self-attention (padding mask) → cross-attention to
  the image tokens → FFN; 12 layers, 12 heads. Its layers 0–1 share the cross-attention/FFN tensors
  with the tagging head (:func:`tie_tagging_head`).
* :class:`BertLMHeadModel` is the Tag2Text **text decoder**: the same layers with causal self-attention
  (+ KV cache) and cross-attention to the tag-encoder states, and an LM head whose decoder weight is
  the word-embedding matrix and whose decoder bias is ``cls.predictions.bias``.

Numerics follow the official code: post-LN residual blocks (eps 1e-12), exact GELU, attention scores
``q·kᵀ / sqrt(head_dim)`` plus an additive mask of **-10000** at masked positions (the official
``get_extended_attention_mask``), softmax, dropout off. ``embeddings.position_ids`` is a persistent
buffer (``arange(512)``), as in the official state dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: additive attention score at masked positions (official ``(1 - mask) * -10000.0``)
MASKED_SCORE = -10000.0

#: a decoder KV cache: per layer (key, value), each ``[B, heads, T_past, head_dim]``
PastKeyValues = tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass(frozen=True)
class BertConfig:
    """The subset of ``med_config.json`` / ``q2l_config.json`` that shapes the modules."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 30524
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    encoder_width: int = 768  #: width of the states cross-attention reads (image or tag encoder)


def med_config(encoder_width: int = 768) -> BertConfig:
    """``configs/med_config.json``: the 12-layer tag encoder / text decoder."""
    return BertConfig(encoder_width=encoder_width)


def q2l_config(encoder_width: int) -> BertConfig:
    """``configs/q2l_config.json``: the 2-layer, 4-head tagging head."""
    return BertConfig(num_layers=2, num_heads=4, encoder_width=encoder_width)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1/0 keep-mask → 0/-10000 additive scores (any shape), in ``dtype``."""
    return (1.0 - mask.to(dtype)) * MASKED_SCORE


class BertSelfAttention(nn.Module):
    """query / key / value projections + scaled dot-product attention (``*.self.*`` keys)."""

    def __init__(self, config: BertConfig, cross: bool):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        kv_width = config.encoder_width if cross else config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(kv_width, config.hidden_size)
        self.value = nn.Linear(kv_width, config.hidden_size)

    def _heads(self, x: torch.Tensor, num_heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, num_heads, -1).transpose(1, 2)

    def forward(
        self,
        hidden: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        num_heads: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attend from ``hidden`` to ``context`` (cross) or to itself (+ ``past``) (self).

        ``mask`` is additive, broadcastable to ``[B, heads, T_q, T_k]``. ``num_heads`` overrides the
        configured head count (the tied tagging-head tensors run with 4 heads there, 12 in the encoder).
        Returns the context vectors and this call's (key, value) for caching.
        """
        heads = num_heads or self.num_heads
        source = hidden if context is None else context
        q = self._heads(self.query(hidden), heads)
        k = self._heads(self.key(source), heads)
        v = self._heads(self.value(source), heads)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        if mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, t, _ = out.shape
        return out.transpose(1, 2).reshape(b, t, -1), (k, v)


class BertSelfOutput(nn.Module):
    """dense → residual → LayerNorm (``*.output.*`` keys of an attention block)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig, cross: bool = False):
        super().__init__()
        self.self = BertSelfAttention(config, cross)
        self.output = BertSelfOutput(config)

    def forward(self, hidden, context=None, mask=None, past=None, num_heads=None):
        attended, present = self.self(hidden, context, mask, past, num_heads)
        return self.output(attended, hidden), present


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertLayer(nn.Module):
    """[self-attention →] cross-attention → FFN, post-LN."""

    def __init__(self, config: BertConfig, self_attention: bool = True):
        super().__init__()
        if self_attention:
            self.attention = BertAttention(config)
        self.crossattention = BertAttention(config, cross=True)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)
        self.num_heads = config.num_heads

    def forward(self, hidden, context, self_mask=None, context_mask=None, past=None):
        present = None
        if hasattr(self, "attention"):
            hidden, present = self.attention(hidden, mask=self_mask, past=past, num_heads=self.num_heads)
        hidden, _ = self.crossattention(hidden, context, context_mask, num_heads=self.num_heads)
        return self.output(self.intermediate(hidden), hidden), present


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig, self_attention: bool = True):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config, self_attention) for _ in range(config.num_layers))


class BertEmbeddings(nn.Module):
    """word + absolute position embeddings → LayerNorm (no token-type embeddings)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings).expand(1, -1))

    def forward(self, input_ids: torch.Tensor, past_length: int = 0) -> torch.Tensor:
        t = input_ids.shape[1]
        if past_length + t > self.position_ids.shape[1]:
            raise ValueError(f"sequence of {past_length + t} tokens exceeds {self.position_ids.shape[1]} positions")
        positions = self.position_ids[:, past_length : past_length + t]
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class BertModel(nn.Module):
    """The tag encoder (default) or, with ``embeddings=False, self_attention=False``, the tagging head."""

    def __init__(self, config: BertConfig, embeddings: bool = True, self_attention: bool = True):
        super().__init__()
        self.config = config
        if embeddings:
            self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config, self_attention)

    def run_layers(
        self,
        hidden: torch.Tensor,
        context: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
    ) -> tuple[torch.Tensor, PastKeyValues]:
        presents = []
        for i, layer in enumerate(self.encoder.layer):
            past = past_key_values[i] if past_key_values is not None else None
            hidden, present = layer(hidden, context, self_mask, context_mask, past)
            presents.append(present)
        return hidden, tuple(presents)

    def tag_queries(self, queries: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Tagging head: ``[B, classes, H]`` label queries attend to ``[B, N, encoder_width]`` image tokens.

        The official image mask is all ones, i.e. nothing is masked.
        """
        return self.run_layers(queries, image_embeds)[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor,
    ) -> torch.Tensor:
        """Tag encoder: token ids ``[B, T]`` (+ 1/0 padding mask) attending to image tokens → ``[B, T, H]``.

        The image tokens are not masked (the official ``encoder_attention_mask`` is all ones).
        """
        hidden = self.embeddings(input_ids)
        mask = None
        if attention_mask is not None:
            mask = additive_mask(attention_mask[:, None, None, :], hidden.dtype)
        return self.run_layers(hidden, encoder_hidden_states, self_mask=mask)[0]


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # same tensor under two keys, as in the official state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


def causal_mask(
    attention_mask: torch.Tensor, query_length: int, dtype: torch.dtype
) -> torch.Tensor:
    """Additive ``[B, 1, T_q, T_k]`` mask: causal over the last ``T_q`` keys × the 1/0 key mask.

    ``attention_mask`` covers all keys (past + new), as in the official
    ``get_extended_attention_mask(is_decoder=True)``.
    """
    b, total = attention_mask.shape
    past = total - query_length
    q_pos = torch.arange(query_length, device=attention_mask.device)[:, None] + past
    k_pos = torch.arange(total, device=attention_mask.device)[None, :]
    keep = (k_pos <= q_pos)[None, None] * attention_mask[:, None, None, :].bool()
    return additive_mask(keep, dtype)


class BertLMHeadModel(nn.Module):
    """Tag2Text text decoder: one step of causal decoding with a KV cache.

    Call it as ``text_decoder(input_ids, encoder_hidden_states, encoder_attention_mask=None,
    past_key_values=None, use_cache=True) -> (logits [B, T, vocab], new_past)``:

    * ``input_ids`` ``[B, T]``: the whole prompt on the first call, then only the newest token(s);
    * ``encoder_hidden_states`` ``[B, S, 768]``: the tag-encoder states (one row per beam);
    * ``encoder_attention_mask``: 1/0 ``[B, S]`` or None = attend to all S states (the official
      Tag2Text passes None, so padded tag positions are attended too);
    * ``past_key_values``: what the previous call returned (``None`` at the start); reorder it for beam
      search with :func:`reorder_past`;
    * ``attention_mask``: optional 1/0 ``[B, T_past + T]`` over the decoder tokens (default: all ones,
      which is what the official generate() uses for the unpadded prompt).
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertOnlyMLMHead(config)
        self.tie_weights()

    def tie_weights(self) -> None:
        """LM-head decoder weight = word embeddings; decoder bias = ``cls.predictions.bias``."""
        predictions = self.cls.predictions
        predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        predictions.decoder.bias = predictions.bias

    def forward(
        self,
        input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
        use_cache: bool = True,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, PastKeyValues | None]:
        past_length = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        b, t = input_ids.shape
        hidden = self.bert.embeddings(input_ids, past_length)
        if attention_mask is None:
            attention_mask = torch.ones(b, past_length + t, dtype=torch.long, device=input_ids.device)
        self_mask = causal_mask(attention_mask, t, hidden.dtype)
        context_mask = None
        if encoder_attention_mask is not None:
            context_mask = additive_mask(encoder_attention_mask[:, None, None, :], hidden.dtype)
        hidden, presents = self.bert.run_layers(
            hidden, encoder_hidden_states, self_mask, context_mask, past_key_values
        )
        logits = self.cls.predictions(hidden)
        return logits, (presents if use_cache else None)


def reorder_past(past: PastKeyValues, beam_index: torch.Tensor) -> PastKeyValues:
    """Select/reorder the batch rows of a KV cache (beam search)."""
    return tuple((k.index_select(0, beam_index), v.index_select(0, beam_index)) for k, v in past)


_TIED_SUBMODULES: Sequence[str] = (
    "crossattention.self.query",
    "crossattention.self.key",
    "crossattention.self.value",
    "crossattention.output.dense",
    "crossattention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)


def tie_tagging_head(tag_encoder: BertModel, tagging_head: BertModel) -> None:
    """Make the tag encoder's lowest layers use the tagging head's tensors (official ``tie_encoder_decoder_weights``).

    The official code ties ``weight`` and ``bias`` of every leaf module of the tagging head's layers
    (cross-attention, intermediate, output) into the same positions of the tag encoder.
    """
    for i, head_layer in enumerate(tagging_head.encoder.layer):
        enc_layer = tag_encoder.encoder.layer[i]
        for name in _TIED_SUBMODULES:
            src = head_layer.get_submodule(name)
            dst = enc_layer.get_submodule(name)
            dst.weight = src.weight
            dst.bias = src.bias
