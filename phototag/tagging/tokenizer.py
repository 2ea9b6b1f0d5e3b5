"""BERT uncased WordPiece tokenizer, as Tag2Text uses it.

Tag2Text tokenizes with ``transformers.BertTokenizer('bert-base-uncased')`` (the *slow*, pure
Python one, transformers 4.25.1) plus two added special tokens, ``[DEC]`` (id 30522, the
decoder's BOS) and ``[ENC]`` (id 30523, replaces ``[CLS]`` in front of the tag text). This module
reproduces that tokenizer on a given ``vocab.txt`` without depending on transformers:

* special tokens (``[CLS] [SEP] [PAD] [MASK] [UNK] [DEC] [ENC]``, exact case) found in the text
  are kept whole; whitespace next to them is dropped;
* everything else is lower-cased character by character, then per word: control characters
  removed, Unicode spaces made spaces, spaces put around CJK ideographs, split on whitespace,
  lower-cased again, accents stripped (NFD, drop ``Mn``), split on punctuation (all non
  alphanumeric ASCII symbols and Unicode ``P*``);
* each word becomes its greedy longest-match WordPiece pieces (``##`` continuation), or one
  ``[UNK]`` when it cannot be covered or is longer than 100 characters;
* decoding joins pieces with spaces, glues ``##`` pieces, drops special tokens on request and
  applies transformers' ``clean_up_tokenization`` (`` .`` → ``.``, `` 's`` → ``'s`` …).

The differences to the Rust ("fast") BERT tokenizer are corner cases (final sigma, a few
whitespace code points), which is why this is written after the slow one.
"""

from __future__ import annotations

import re
import unicodedata
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


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    if char in "\t\n\r":
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_cjk(char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _split_on_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for char in word:
        if _is_punctuation(char):
            if current:
                pieces.append(current)
                current = ""
            pieces.append(char)
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def basic_tokenize(text: str) -> list[str]:
    """Split text (without special tokens) into lower-cased, accent-free words and punctuation."""
    cleaned = []
    for char in text:
        if char in ("\x00", "\ufffd") or _is_control(char):
            continue
        if _is_whitespace(char):
            cleaned.append(" ")
        elif _is_cjk(char):
            cleaned.append(f" {char} ")
        else:
            cleaned.append(char)
    words: list[str] = []
    for word in "".join(cleaned).split():
        words.extend(_split_on_punctuation(_strip_accents(word.lower())))
    # pieces never contain whitespace, but stripping accents can empty one ("\u0301" alone)
    return [w for w in " ".join(words).split()]


class BertTokenizer:
    """BERT uncased WordPiece tokenizer with extra special tokens appended to the vocabulary.

    ``BertTokenizer.from_vocab_file(path)`` gives Tag2Text's tokenizer (``[DEC]`` = 30522,
    ``[ENC]`` = 30523 on the bert-base-uncased vocabulary).
    """

    def __init__(self, vocab: Sequence[str], added_tokens: Iterable[str] = TAG2TEXT_ADDED_TOKENS) -> None:
        self.vocab: dict[str, int] = {}
        for index, token in enumerate(vocab):
            self.vocab[token] = index  # a repeated line keeps its last index, as transformers does
        self._id_to_token: dict[int, str] = {i: t for t, i in self.vocab.items()}
        missing = [t for t in BERT_SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise TokenizerError(f"the vocabulary has no {', '.join(missing)}: not a BERT vocab.txt")
        for token in added_tokens:
            if token in self.vocab:
                raise TokenizerError(f"added token {token} is already in the vocabulary")
            index = len(self._id_to_token) if not self._id_to_token else max(self._id_to_token) + 1
            self.vocab[token] = index
            self._id_to_token[index] = token
        self.added_tokens = tuple(added_tokens)
        self.special_tokens = BERT_SPECIAL_TOKENS + self.added_tokens
        self.special_ids = frozenset(self.vocab[t] for t in self.special_tokens)
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in self.special_tokens) + ")")

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
        return len(self._id_to_token)

    def _wordpiece(self, word: str) -> list[str]:
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            return ["[UNK]"]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    pieces.append(piece)
                    break
                end -= 1
            else:
                return ["[UNK]"]
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Text → WordPiece tokens (special tokens in the text stay whole)."""
        tokens: list[str] = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:  # a special token
                tokens.append(part)
                continue
            # transformers lower-cases character by character before its basic tokenizer
            lowered = "".join(c.lower() for c in part)
            for word in basic_tokenize(lowered):
                tokens.extend(self._wordpiece(word))
        return tokens

    def encode(self, text: str, max_length: int | None = None, add_special_tokens: bool = True) -> list[int]:
        """Text → ids, ``[CLS] … [SEP]`` around it; truncated from the right to ``max_length``."""
        ids = [self.vocab[t] for t in self.tokenize(text)]
        if not add_special_tokens:
            return ids if max_length is None else ids[:max_length]
        if max_length is not None:
            if max_length < 2:
                raise TokenizerError(f"max_length {max_length} leaves no room for [CLS] and [SEP]")
            ids = ids[: max_length - 2]
        return [self.cls_token_id, *ids, self.sep_token_id]

    def __call__(
        self, texts: Sequence[str], max_length: int | None = None, pad_to_max_length: bool = False
    ) -> Encoding:
        """Encode a batch, right-padded with ``[PAD]`` to the longest (or to ``max_length``)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of strings")
        encoded = [self.encode(t, max_length) for t in texts]
        if pad_to_max_length:
            if max_length is None:
                raise TokenizerError("pad_to_max_length needs max_length")
            width = max_length
        else:
            width = max((len(e) for e in encoded), default=0)
        ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[row, : len(e)] = 1
        return Encoding(ids, mask)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._id_to_token.get(int(i), "[UNK]") for i in ids]

    def decode(
        self, ids: Iterable[int], skip_special_tokens: bool = True, clean_up_tokenization_spaces: bool = True
    ) -> str:
        """Ids → text the way ``transformers`` 4.25.1 ``BertTokenizer.decode`` does it."""
        chunks: list[str] = []
        words: list[str] = []
        for i in ids:
            i = int(i)
            if skip_special_tokens and i in self.special_ids:
                continue
            token = self._id_to_token.get(i, "[UNK]")
            if token in self.added_tokens:  # added tokens are their own chunk
                if words:
                    chunks.append(" ".join(words).replace(" ##", "").strip())
                    words = []
                chunks.append(token)
            else:
                words.append(token)
        if words:
            chunks.append(" ".join(words).replace(" ##", "").strip())
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
