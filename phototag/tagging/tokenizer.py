"""BERT uncased WordPiece tokenizer, as Tag2Text uses it, on Hugging Face's ``tokenizers``.

Tag2Text tokenizes with ``transformers.BertTokenizer('bert-base-uncased')`` (the *slow*, pure
Python one, transformers 4.25.1) plus two added special tokens, ``[DEC]`` (id 30522, the
decoder's BOS) and ``[ENC]`` (id 30523, replaces ``[CLS]`` in front of the tag text). Here the
work is done by the Rust ``tokenizers`` pipeline (a runtime dependency anyway: plain-language
search uses it), configured to give the slow tokenizer's ids:

* ``[CLS] [SEP] [PAD] [MASK] [UNK] [DEC] [ENC]`` are special (added) tokens: found whole in the
  text, exact case;
* normalizer: unassigned code points (Unicode ``Cn``) removed — the slow tokenizer drops every
  ``C*`` character, the Rust ``BertNormalizer`` keeps ``Cn`` — then ``BertNormalizer`` (controls
  dropped, Unicode spaces made spaces, spaces around CJK ideographs, lower-cased, accents stripped);
* pre-tokenizer ``BertPreTokenizer`` (whitespace, then every punctuation character alone);
* model ``WordPiece`` (greedy longest match, ``##`` continuations, ``[UNK]`` for a word it cannot
  cover or longer than 100 characters).

What stays here is Tag2Text's own glue: ``[CLS] … [SEP]`` with right truncation, right padding to a
fixed length, and decoding the way transformers 4.25.1 does it — added tokens are chunks of their
own (a ``##`` piece right after ``[ENC]`` is not glued to it) and ``clean_up_tokenization`` is
transformers' list (the Rust WordPiece decoder's own ``cleanup`` leaves ``it ' s`` apart, which
transformers glues into ``it's``).

Checked against the slow tokenizer on 307 strings, hard Unicode cases included
(``tests/tagging/golden/tokenizer_bert_uncased_tf4251.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from phototag.tagging.base import TaggerError

BERT_SPECIAL_TOKENS = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")
#: tokens Tag2Text appends to the BERT vocabulary, in id order
TAG2TEXT_ADDED_TOKENS = ("[DEC]", "[ENC]")
MAX_INPUT_CHARS_PER_WORD = 100


class TokenizerError(TaggerError):
    """The vocabulary file is missing or unusable, or the input cannot be encoded."""


@dataclass(frozen=True)
class Encoding:
    """A padded batch of token ids (``[B, T]`` int64) and its attention mask (1 = real token)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def _rust_tokenizer(vocab: dict[str, int], added_tokens: Sequence[str]):
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    tk = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    tk.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(r"\p{Cn}"), ""),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True),
    ])
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tk.add_special_tokens(list(BERT_SPECIAL_TOKENS))
    tk.add_special_tokens(list(added_tokens))
    return tk


class BertTokenizer:
    """BERT uncased WordPiece tokenizer with extra special tokens appended to the vocabulary.

    ``BertTokenizer.from_vocab_file(path)`` gives Tag2Text's tokenizer (``[DEC]`` = 30522,
    ``[ENC]`` = 30523 on the bert-base-uncased vocabulary).
    """

    def __init__(self, vocab: Sequence[str], added_tokens: Iterable[str] = TAG2TEXT_ADDED_TOKENS) -> None:
        ids: dict[str, int] = {}
        repeated = []
        for index, token in enumerate(vocab):
            if token in ids:
                repeated.append(token)
            ids[token] = index
        if repeated:  # the Rust WordPiece numbers added tokens after len(vocab): ids would collide
            raise TokenizerError(f"the vocabulary repeats {len(repeated)} tokens (first: {repeated[0]!r})")
        missing = [t for t in BERT_SPECIAL_TOKENS if t not in ids]
        if missing:
            raise TokenizerError(f"the vocabulary has no {', '.join(missing)}: not a BERT vocab.txt")
        self.added_tokens = tuple(added_tokens)
        for token in self.added_tokens:
            if token in ids:
                raise TokenizerError(f"added token {token} is already in the vocabulary")
        self._tk = _rust_tokenizer(ids, self.added_tokens)
        self.vocab: dict[str, int] = self._tk.get_vocab(with_added_tokens=True)
        self.special_tokens = BERT_SPECIAL_TOKENS + self.added_tokens
        self.special_ids = frozenset(self.vocab[t] for t in self.special_tokens)
        self._added_ids = frozenset(self.vocab[t] for t in self.added_tokens)

    @classmethod
    def from_vocab_file(
        cls, path: str | Path, added_tokens: Iterable[str] = TAG2TEXT_ADDED_TOKENS
    ) -> "BertTokenizer":
        """Read a BERT ``vocab.txt`` (one token a line, line number = id)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenizerError(f"cannot read the BERT vocabulary {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise TokenizerError(f"the BERT vocabulary {path} is not UTF-8 text") from exc
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls(lines, added_tokens)

    # ids of the tokens Tag2Text uses
    @property
    def cls_token_id(self) -> int:
        return self.vocab["[CLS]"]

    @property
    def sep_token_id(self) -> int:
        return self.vocab["[SEP]"]

    @property
    def pad_token_id(self) -> int:
        return self.vocab["[PAD]"]

    @property
    def unk_token_id(self) -> int:
        return self.vocab["[UNK]"]

    @property
    def dec_token_id(self) -> int:
        return self.vocab["[DEC]"]

    @property
    def enc_token_id(self) -> int:
        return self.vocab["[ENC]"]

    def __len__(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    def tokenize(self, text: str) -> list[str]:
        """Text → WordPiece tokens (special tokens in the text stay whole)."""
        return self._tk.encode(text, add_special_tokens=False).tokens

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tk.encode_batch(list(texts), add_special_tokens=False)]

    def _wrap(self, ids: list[int], max_length: int | None) -> list[int]:
        """``[CLS] ids [SEP]``, the ids cut from the right so that the whole fits ``max_length``."""
        if max_length is not None:
            if max_length < 2:
                raise TokenizerError(f"max_length {max_length} leaves no room for [CLS] and [SEP]")
            ids = ids[: max_length - 2]
        return [self.cls_token_id, *ids, self.sep_token_id]

    def encode(self, text: str, max_length: int | None = None, add_special_tokens: bool = True) -> list[int]:
        """Text → ids, ``[CLS] … [SEP]`` around it; truncated from the right to ``max_length``."""
        ids = self._ids([text])[0]
        if not add_special_tokens:
            return ids if max_length is None else ids[:max_length]
        return self._wrap(ids, max_length)

    def __call__(
        self, texts: Sequence[str], max_length: int | None = None, pad_to_max_length: bool = False
    ) -> Encoding:
        """Encode a batch, right-padded with ``[PAD]`` to the longest (or to ``max_length``)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of strings")
        if pad_to_max_length and max_length is None:
            raise TokenizerError("pad_to_max_length needs max_length")
        encoded = [self._wrap(ids, max_length) for ids in self._ids(texts)]
        width = max_length if pad_to_max_length else max((len(e) for e in encoded), default=0)
        ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[row, : len(e)] = 1
        return Encoding(ids, mask)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._tk.id_to_token(int(i)) or "[UNK]" for i in ids]

    def decode(
        self, ids: Iterable[int], skip_special_tokens: bool = True, clean_up_tokenization_spaces: bool = True
    ) -> str:
        """Ids → text the way ``transformers`` 4.25.1 ``BertTokenizer.decode`` does it."""
        chunks: list[str] = []
        words: list[int] = []

        def flush() -> None:
            if words:
                chunks.append(self._tk.decode(words, skip_special_tokens=False).strip())
                words.clear()

        for i in map(int, ids):
            if skip_special_tokens and i in self.special_ids:
                continue
            if i in self._added_ids:  # added tokens are chunks of their own
                flush()
                chunks.append(self._tk.id_to_token(i))
            else:
                words.append(i if self._tk.id_to_token(i) is not None else self.unk_token_id)
        flush()
        text = " ".join(chunks)
        if clean_up_tokenization_spaces:
            text = clean_up_tokenization(text)
        return text


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: glue punctuation and English contractions."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text
