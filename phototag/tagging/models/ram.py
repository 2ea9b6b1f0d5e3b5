"""RAM, RAM++ and Tag2Text: tensors in, logits / embeddings out. No files, no thresholds, no tokenizer.

Written from the official ``ram/models/{ram,ram_plus,tag2text}.py`` (xinyu1205/recognize-anything
@ 7cb804a8); module and parameter names equal the official state-dict keys except inside the
image encoder, which is timm's ``SwinTransformer`` (:mod:`.swin`: patch merging sits one stage
later in timm's names). An official ``checkpoint['model']`` loads with ``strict=True`` after
:func:`phototag.tagging.weights.official_key_transform` (drops the 35 recomputed Swin buffers,
renames those 9 patch-merging keys).

Forward passes (``x`` = ``[B, 3, 384, 384]`` ImageNet-normalised, see SPEC §3):

* RAM:      ``img = image_proj(swin_l(x))``; ``q = relu(wordvec_proj(label_embed))``;
            ``logits = fc(tagging_head(q, img)).squeeze(-1)``.
* RAM++:    same, but each class query is an image-dependent softmax mix of its 51 description
            embeddings: ``w = softmax(exp(reweight_scale) · norm(img[:,0]) @ label_embedᵀ)`` per class.
* Tag2Text: ``img = swin_b(x)`` (no projection); ``q = label_embed.weight``;
            ``logits = (fc.W · tagging_head(q, img)).sum(-1) + fc.b``.

RAM and RAM++ also give ``image_proj(swin(x))[:, 0]``, a 512-d embedding distilled toward CLIP
ViT-B/16's image space (un-normalised here).

``tagging_only=True`` builds RAM / Tag2Text without ``tag_encoder`` / ``text_decoder`` (55 % of RAM's
weights, never used for tags). Tag2Text keeps them by default because it captions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .bert import BertConfig, BertLMHeadModel, BertModel, med_config, q2l_config, tie_tagging_head
from .swin import SWIN_B_384, SWIN_L_384, RamSwin, SwinConfig

RAM_NUM_CLASSES = 4585
TAG2TEXT_NUM_CLASSES = 3429
RAM_PLUS_DESCRIPTIONS = 51  #: description embeddings per class in RAM++'s ``label_embed``
CLIP_DIM = 512  #: width of ``label_embed`` rows and of ``image_proj`` (CLIP ViT-B/16 space)


@dataclass(frozen=True)
class RamArch:
    """Everything that shapes one of the three models (defaults = the released checkpoints)."""

    kind: str  #: "ram" | "ram_plus" | "tag2text"
    swin: SwinConfig
    num_classes: int
    head: BertConfig  #: tagging head (q2l)
    text: BertConfig | None = None  #: tag encoder / text decoder (med), None for RAM++
    descriptions: int = RAM_PLUS_DESCRIPTIONS
    clip_dim: int = CLIP_DIM

    def derive(self, **overrides) -> "RamArch":
        """This architecture with some fields changed (class count, or small sizes for tests)."""
        return replace(self, **overrides)


def ram_arch() -> RamArch:
    return RamArch("ram", SWIN_L_384, RAM_NUM_CLASSES, q2l_config(CLIP_DIM), med_config(CLIP_DIM))


def ram_plus_arch() -> RamArch:
    return RamArch("ram_plus", SWIN_L_384, RAM_NUM_CLASSES, q2l_config(CLIP_DIM), None)


def tag2text_arch() -> RamArch:
    width = SWIN_B_384.num_features
    return RamArch("tag2text", SWIN_B_384, TAG2TEXT_NUM_CLASSES, q2l_config(width), med_config(width))


ARCHS = {"ram": ram_arch, "ram_plus": ram_plus_arch, "tag2text": tag2text_arch}


class GroupWiseLinear(nn.Module):
    """Per-class linear logit layer of Tag2Text: ``(W · h).sum(-1) + b`` with W ``[1, C, H]``, b ``[1, C]``."""

    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.W = nn.Parameter(torch.empty(1, num_classes, hidden))
        self.b = nn.Parameter(torch.empty(1, num_classes))
        bound = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.W, -bound, bound)
        nn.init.uniform_(self.b, -bound, bound)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (self.W * h).sum(-1) + self.b


class _TaggerBase(nn.Module):
    arch: RamArch

    def _build_text_modules(self, arch: RamArch, tagging_only: bool) -> None:
        self.has_text = arch.text is not None and not tagging_only
        if self.has_text:
            self.tag_encoder = BertModel(arch.text)
            self.text_decoder = BertLMHeadModel(replace(arch.text, encoder_width=arch.text.hidden_size))

    def _tie(self) -> None:
        if self.has_text:
            tie_tagging_head(self.tag_encoder, self.tagging_head)

    def tie_weights(self) -> None:
        """(Re-)tie shared tensors: tagging head ↔ tag encoder layers 0-1, LM head ↔ word embeddings.

        Needed after ``load_state_dict(assign=True)``, which replaces parameters one key at a time.
        """
        if self.has_text:
            tie_tagging_head(self.tag_encoder, self.tagging_head)
            self.text_decoder.tie_weights()

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes


class RAM(_TaggerBase):
    """Recognize Anything (Swin-L): 4585 classes from frozen CLIP text embeddings."""

    def __init__(self, arch: RamArch | None = None, tagging_only: bool = False):
        super().__init__()
        arch = arch or ram_arch()
        self.arch = arch
        self.label_embed = nn.Parameter(torch.zeros(arch.num_classes, arch.clip_dim))
        self.visual_encoder = RamSwin(arch.swin)
        self._build_text_modules(arch, tagging_only)
        self.tagging_head = BertModel(arch.head, embeddings=False, self_attention=False)
        self.wordvec_proj = nn.Linear(arch.clip_dim, arch.head.hidden_size)
        self.fc = nn.Linear(arch.head.hidden_size, 1)
        self.image_proj = nn.Linear(arch.swin.num_features, arch.clip_dim)
        self._tie()

    def image_embeds(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1 + tokens, 512]``; row 0 is the CLIP-distilled image embedding (un-normalised)."""
        return self.image_proj(self.visual_encoder(x))

    def label_queries(self, image_embeds: torch.Tensor) -> torch.Tensor:
        q = F.relu(self.wordvec_proj(self.label_embed))
        return q.unsqueeze(0).expand(image_embeds.shape[0], -1, -1)

    def logits_from_embeds(self, image_embeds: torch.Tensor) -> torch.Tensor:
        h = self.tagging_head.tag_queries(self.label_queries(image_embeds), image_embeds)
        return self.fc(h).squeeze(-1)

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, C], image embedding [B, 512])`` from one Swin pass."""
        emb = self.image_embeds(x)
        return self.logits_from_embeds(emb), emb[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_embedding(x)[0]


class RAMPlus(RAM):
    """RAM++ (Swin-L): each class query is an image-weighted mix of 51 description embeddings."""

    def __init__(self, arch: RamArch | None = None, tagging_only: bool = True):
        nn.Module.__init__(self)
        arch = arch or ram_plus_arch()
        self.arch = arch
        self.label_embed = nn.Parameter(torch.zeros(arch.num_classes * arch.descriptions, arch.clip_dim))
        self.reweight_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.visual_encoder = RamSwin(arch.swin)
        self.has_text = False  # RAM++ ships no caption modules
        self.tagging_head = BertModel(arch.head, embeddings=False, self_attention=False)
        self.wordvec_proj = nn.Linear(arch.clip_dim, arch.head.hidden_size)
        self.fc = nn.Linear(arch.head.hidden_size, 1)
        self.image_proj = nn.Linear(arch.swin.num_features, arch.clip_dim)

    def tie_weights(self) -> None:
        pass

    def label_queries(self, image_embeds: torch.Tensor) -> torch.Tensor:
        b = image_embeds.shape[0]
        cls = image_embeds[:, 0]
        cls = cls / cls.norm(dim=-1, keepdim=True)
        per_class = self.label_embed.shape[0] // self.arch.num_classes
        sims = self.reweight_scale.exp() * cls @ self.label_embed.t()
        weights = F.softmax(sims.view(b, -1, per_class), dim=2)  # B, C, D
        table = self.label_embed.view(-1, per_class, self.label_embed.shape[1])  # C, D, 512
        mixed = torch.einsum("bcd,cde->bce", weights.to(table.dtype), table)
        return F.relu(self.wordvec_proj(mixed))


class Tag2Text(_TaggerBase):
    """Tag2Text (Swin-B): 3429 learned label queries; tag encoder + text decoder for captions."""

    def __init__(self, arch: RamArch | None = None, tagging_only: bool = False):
        super().__init__()
        arch = arch or tag2text_arch()
        self.arch = arch
        self.visual_encoder = RamSwin(arch.swin)
        self._build_text_modules(arch, tagging_only)
        self.tagging_head = BertModel(arch.head, embeddings=False, self_attention=False)
        self.label_embed = nn.Embedding(arch.num_classes, arch.head.hidden_size)
        self.fc = GroupWiseLinear(arch.num_classes, arch.head.hidden_size)
        self._tie()

    def image_embeds(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1 + tokens, 1024]`` Swin-B tokens (what the tag encoder cross-attends to)."""
        return self.visual_encoder(x)

    def logits_from_embeds(self, image_embeds: torch.Tensor) -> torch.Tensor:
        q = self.label_embed.weight.unsqueeze(0).expand(image_embeds.shape[0], -1, -1)
        return self.fc(self.tagging_head.tag_queries(q, image_embeds))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_embeds(self.image_embeds(x))

    def encode_tags(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor
    ) -> torch.Tensor:
        """Tag encoder states ``[B, T, 768]`` for tokenised tag text (the caption decoder's context)."""
        if not self.has_text:
            raise RuntimeError("this Tag2Text was built tagging-only (no tag encoder / text decoder)")
        return self.tag_encoder(input_ids, attention_mask, image_embeds)


MODEL_CLASSES = {"ram": RAM, "ram_plus": RAMPlus, "tag2text": Tag2Text}


def build_model(kind: str, tagging_only: bool = False, arch: RamArch | None = None) -> nn.Module:
    """An un-initialised (zeros / random) model of ``kind`` in eval mode."""
    try:
        cls = MODEL_CLASSES[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_CLASSES)}") from None
    arch = arch or ARCHS[kind]()
    return cls(arch, tagging_only=tagging_only).eval()
