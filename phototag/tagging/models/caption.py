"""Tag2Text captioning: tag text + image tokens → one sentence, decoded as the official code does.

The official ``Tag2Text.generate`` (xinyu1205/recognize-anything @ 7cb804a8) hands its decoder to
``transformers.GenerationMixin.generate``; the released model was made and checked with
transformers 4.25.1, whose beam search is reproduced here without transformers (later versions mix
the images of a batch, SPEC §13). What happens for each photo:

1. tag text (``"cat | grass"``) → BERT tokens, padded/truncated to 40, ``[CLS]`` replaced by ``[ENC]``;
2. ``tag_encoder(ids, padding mask, image tokens)`` → ``[40, 768]`` states; the decoder cross-attends
   to **all 40**, padding included (the official ``encoder_attention_mask=None``);
3. the prompt ``"a picture of "`` → ``[DEC] a picture of`` (its ``[SEP]`` dropped) starts the decoder;
4. beam search, ``num_beams=3``, ``max_length=50`` tokens (prompt included), ``min_length=10``:

   * each step scores ``log_softmax(last logits)`` (``[SEP]`` = -inf while the sequence is shorter
     than ``min_length``) plus the beam's running sum; at the first step only beam 0 counts (the
     others start at -1e9);
   * the ``2·num_beams`` best (beam, token) pairs of the photo, best first (``torch.topk``), are walked
     in order: a ``[SEP]`` among the first ``num_beams`` ends a hypothesis (kept with score
     ``sum / length`` — length without the ``[SEP]``), a ``[SEP]`` further down is skipped, anything
     else continues a beam until ``num_beams`` beams are filled;
   * at most ``num_beams`` finished hypotheses are kept (a better one evicts the worst);
   * a photo is done when it has ``num_beams`` finished hypotheses and the best running score
     divided by the current length is not better than the worst finished one
     (``early_stopping=False``, ``length_penalty=1``);
   * at ``max_length`` the open beams join the finished ones with their running score;
   * the hypothesis with the highest score wins (the later one of equal scores);
5. decode without special tokens, drop the first ``len(prompt)`` characters.

Unlike the official batch code on new transformers versions, every photo's caption depends on its
own photo only; photos that finish early leave the batch (no padding steps). The decoder runs with
a KV cache, one new token per step.

``num_beams=1`` is transformers' greedy search (argmax of the raw logits, ``[SEP]`` blocked below
``min_length``), offered for speed; it is not what the official default does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F

from phototag.tagging.tokenizer import BertTokenizer

#: Tag2Text's decoder prompt; its characters are cut from the decoded caption
PROMPT = "a picture of "
#: tag text is padded / truncated to this many tokens (``[ENC]`` and ``[SEP]`` included)
TAG_MAX_TOKENS = 40
#: official defaults of ``inference_tag2text`` (``generate(max_length=50)``; method defaults 30)
NUM_BEAMS = 3
MAX_LENGTH = 50
MIN_LENGTH = 10


class TagEncoder(Protocol):
    """``tag_encoder(input_ids [B,T], attention_mask [B,T], encoder_hidden_states [B,N,C]) -> [B,T,H]``."""

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor: ...


class TextDecoder(Protocol):
    """One causal decoding step with a KV cache.

    ``text_decoder(input_ids [B,T], encoder_hidden_states [B,S,H], encoder_attention_mask=None,
    past_key_values=None, use_cache=True) -> (logits [B,T,vocab], new_past)``. ``new_past`` is a
    nested tuple of tensors whose dim 0 is the batch (it is reordered row-wise for beam search).
    """

    def __call__(
        self,
        input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, Any]: ...


class CaptionModel(Protocol):
    """What captioning needs of a Tag2Text model."""

    tag_encoder: TagEncoder
    text_decoder: TextDecoder


def select_rows(past: Any, index: torch.Tensor) -> Any:
    """Pick batch rows ``index`` of every tensor in a (nested tuple/list) KV cache."""
    if past is None:
        return None
    if isinstance(past, torch.Tensor):
        return past.index_select(0, index.to(past.device))
    if isinstance(past, (tuple, list)):
        return type(past)(select_rows(p, index) for p in past)
    raise TypeError(f"cannot reorder a KV cache entry of type {type(past).__name__}")


@dataclass
class BeamHypotheses:
    """The ``num_beams`` best finished sequences of one photo (transformers 4.25.1 semantics)."""

    num_beams: int
    length_penalty: float = 1.0
    early_stopping: bool = False
    beams: list[tuple[float, list[int]]] = field(default_factory=list)
    worst_score: float = 1e9

    def add(self, tokens: list[int], sum_logprobs: float) -> None:
        score = sum_logprobs / (len(tokens) ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        return self.worst_score >= best_sum_logprobs / cur_len**self.length_penalty

    def best(self) -> list[int]:
        # a stable sort, then the last one: of equal scores the latest added wins
        return sorted(self.beams, key=lambda b: b[0])[-1][1]


def _check_lengths(prompt_len: int, max_length: int, min_length: int, max_positions: int | None) -> None:
    if prompt_len < 1:
        raise ValueError("the decoder prompt is empty")
    if max_length <= prompt_len:
        raise ValueError(f"max_length {max_length} leaves no room after the {prompt_len}-token prompt")
    if max_positions is not None and max_length > max_positions:
        raise ValueError(f"max_length {max_length} exceeds the decoder's {max_positions} positions")
    if min_length > max_length:
        raise ValueError(f"min_length {min_length} is larger than max_length {max_length}")


def beam_search(
    decoder: TextDecoder,
    prompt_ids: Sequence[int],
    encoder_states: torch.Tensor,
    *,
    num_beams: int = NUM_BEAMS,
    max_length: int = MAX_LENGTH,
    min_length: int = MIN_LENGTH,
    eos_token_id: int,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
) -> list[list[int]]:
    """Best token sequence (prompt included, final ``[SEP]`` not) for each row of ``encoder_states``.

    ``encoder_states`` is ``[B, S, H]``, one row per photo (not per beam).
    """
    if num_beams < 2:
        raise ValueError("beam search needs num_beams >= 2 (use greedy_search for 1)")
    batch = encoder_states.shape[0]
    if batch == 0:
        return []
    device = encoder_states.device
    k = num_beams
    hyps = [BeamHypotheses(k, length_penalty, early_stopping) for _ in range(batch)]
    active = list(range(batch))  # photo of each group of k rows, in row order
    seqs = torch.tensor([list(prompt_ids)] * (batch * k), dtype=torch.long, device=device)
    context = encoder_states.repeat_interleave(k, dim=0)
    beam_scores = torch.zeros(batch, k, dtype=torch.float32, device=device)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    past = None
    cur_len = seqs.shape[1]
    while True:
        step_ids = seqs if past is None else seqs[:, -1:]
        logits, past = decoder(step_ids, context, None, past, True)
        logprobs = F.log_softmax(logits[:, -1, :].float(), dim=-1)
        if cur_len < min_length:
            logprobs[:, eos_token_id] = -float("inf")
        vocab = logprobs.shape[-1]
        scores = (logprobs + beam_scores[:, None]).view(len(active), k * vocab)
        top_scores, top_ids = torch.topk(scores, 2 * k, dim=1, largest=True, sorted=True)
        top_scores_l = top_scores.tolist()
        top_tokens_l = (top_ids % vocab).tolist()
        top_beams_l = torch.div(top_ids, vocab, rounding_mode="floor").tolist()
        seq_rows = seqs.tolist()

        rows: list[int] = []
        tokens: list[int] = []
        new_scores: list[float] = []
        still_active: list[int] = []
        for j, photo in enumerate(active):
            chosen_rows, chosen_tokens, chosen_scores = [], [], []
            for rank in range(2 * k):
                row = j * k + top_beams_l[j][rank]
                token = top_tokens_l[j][rank]
                if token == eos_token_id:
                    if rank < k:  # a [SEP] outside the top k is not a hypothesis
                        hyps[photo].add(seq_rows[row], top_scores_l[j][rank])
                else:
                    chosen_rows.append(row)
                    chosen_tokens.append(token)
                    chosen_scores.append(top_scores_l[j][rank])
                    if len(chosen_rows) == k:
                        break
            if hyps[photo].is_done(top_scores_l[j][0], cur_len):
                continue  # finished: drop its beams from the batch
            still_active.append(photo)
            rows += chosen_rows
            tokens += chosen_tokens
            new_scores += chosen_scores
        cur_len += 1
        active = still_active
        if not active:
            break
        index = torch.tensor(rows, dtype=torch.long, device=device)
        seqs = torch.cat([seqs.index_select(0, index), torch.tensor(tokens, device=device)[:, None]], dim=1)
        if cur_len >= max_length:
            # the open beams join the finished ones with their running scores
            for row, (tokens_row, score) in enumerate(zip(seqs.tolist(), new_scores)):
                hyps[active[row // k]].add(tokens_row, score)
            break
        beam_scores = torch.tensor(new_scores, dtype=torch.float32, device=device)
        context = context.index_select(0, index)
        past = select_rows(past, index)
    return [h.best() for h in hyps]


def greedy_search(
    decoder: TextDecoder,
    prompt_ids: Sequence[int],
    encoder_states: torch.Tensor,
    *,
    max_length: int = MAX_LENGTH,
    min_length: int = MIN_LENGTH,
    eos_token_id: int,
) -> list[list[int]]:
    """transformers' greedy search: the argmax token each step until ``[SEP]`` (not included)."""
    batch = encoder_states.shape[0]
    device = encoder_states.device
    results: list[list[int] | None] = [None] * batch
    active = list(range(batch))
    seqs = torch.tensor([list(prompt_ids)] * batch, dtype=torch.long, device=device)
    context = encoder_states
    past = None
    cur_len = seqs.shape[1]
    while active:
        step_ids = seqs if past is None else seqs[:, -1:]
        logits, past = decoder(step_ids, context, None, past, True)
        last = logits[:, -1, :].float()
        if cur_len < min_length:
            last[:, eos_token_id] = -float("inf")
        next_tokens = last.argmax(dim=-1)
        cur_len += 1
        finished = next_tokens == eos_token_id
        keep = (~finished).nonzero().flatten()
        for j, photo in enumerate(active):
            if finished[j]:
                results[photo] = seqs[j].tolist()
        seqs = torch.cat([seqs, next_tokens[:, None]], dim=1).index_select(0, keep)
        active = [active[j] for j in keep.tolist()]
        if cur_len >= max_length:
            for j, photo in enumerate(active):
                results[photo] = seqs[j].tolist()
            break
        context = context.index_select(0, keep)
        past = select_rows(past, keep)
    return [r if r is not None else [] for r in results]


def encode_tag_text(tokenizer: BertTokenizer, tag_strings: Sequence[str], device: torch.device | str = "cpu"):
    """Tag text → (``[B, 40]`` ids starting with ``[ENC]``, ``[B, 40]`` padding mask), as the official code."""
    enc = tokenizer(list(tag_strings), max_length=TAG_MAX_TOKENS, pad_to_max_length=True)
    ids = enc.input_ids.clone()
    ids[:, 0] = tokenizer.enc_token_id
    return ids.to(device), enc.attention_mask.to(device)


def prompt_ids(tokenizer: BertTokenizer, prompt: str = PROMPT) -> list[int]:
    """``[DEC]`` + prompt tokens (the prompt's ``[SEP]`` dropped): ``[30522, 1037, 3861, 1997]``."""
    ids = tokenizer.encode(prompt)
    ids[0] = tokenizer.dec_token_id
    return ids[:-1]


def generate_caption_ids(
    model: CaptionModel,
    image_embeds: torch.Tensor,
    tag_strings: Sequence[str],
    tokenizer: BertTokenizer,
    num_beams: int = NUM_BEAMS,
    max_length: int = MAX_LENGTH,
    min_length: int = MIN_LENGTH,
    prompt: str = PROMPT,
) -> list[list[int]]:
    """Token ids of each photo's caption (prompt included, no final ``[SEP]``)."""
    if isinstance(tag_strings, str):
        raise TypeError("tag_strings must be a list of strings, one per photo")
    if image_embeds.dim() != 3:
        raise ValueError(f"image_embeds must be [B, tokens, width], got shape {tuple(image_embeds.shape)}")
    if len(tag_strings) != image_embeds.shape[0]:
        raise ValueError(f"{len(tag_strings)} tag strings for {image_embeds.shape[0]} photos")
    start = prompt_ids(tokenizer, prompt)
    config = getattr(model.text_decoder, "config", None)
    _check_lengths(len(start), max_length, min_length, getattr(config, "max_position_embeddings", None))
    if image_embeds.shape[0] == 0:
        return []
    device = image_embeds.device
    with torch.inference_mode():
        ids, mask = encode_tag_text(tokenizer, tag_strings, device)
        tag_states = model.tag_encoder(ids, mask, image_embeds)
        if num_beams == 1:
            return greedy_search(
                model.text_decoder,
                start,
                tag_states,
                max_length=max_length,
                min_length=min_length,
                eos_token_id=tokenizer.sep_token_id,
            )
        return beam_search(
            model.text_decoder,
            start,
            tag_states,
            num_beams=num_beams,
            max_length=max_length,
            min_length=min_length,
            eos_token_id=tokenizer.sep_token_id,
        )


def generate_caption(
    model: CaptionModel,
    image_embeds: torch.Tensor,
    tag_strings: Sequence[str],
    tokenizer: BertTokenizer,
    num_beams: int = NUM_BEAMS,
    max_length: int = MAX_LENGTH,
    min_length: int = MIN_LENGTH,
    prompt: str = PROMPT,
) -> list[str]:
    """One caption per photo, exactly as the official ``Tag2Text.generate`` (beam search default).

    ``image_embeds`` ``[B, 145, 1024]`` are the Swin-B tokens of the photos (``model.image_embeds``);
    ``tag_strings`` are ``' | '``-joined tag names, one string per photo (the tags the model found,
    minus the official ``delete_tag_index`` ones, or tags the user gave).
    """
    seqs = generate_caption_ids(
        model, image_embeds, tag_strings, tokenizer, num_beams, max_length, min_length, prompt
    )
    return [tokenizer.decode(s, skip_special_tokens=True)[len(prompt) :] for s in seqs]
