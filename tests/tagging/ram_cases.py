"""Model configurations shared by the RAM tests, the golden-file recipe and the benchmark.

:func:`tiny_arch` mirrors what ``golden/RAM_OFFICIAL.md`` gave the official implementation: the real
class counts (RAM++: 50 classes), Swin with embed 16 / depths 2-2-2-2 / heads 1-2-2-4 at 384 px
(the real window 12, shift 6 and -100 masks) and BERTs of width 64 (4 heads, FFN 128, 2 layers).
"""

from __future__ import annotations

from pathlib import Path

import torch

from phototag.tagging.models.bert import BertConfig
from phototag.tagging.models.ram import ARCHS, RamArch, build_model
from phototag.tagging.models.swin import SwinConfig
from phototag.tagging.synthetic import official_entries, synthetic_state_dict, tied_groups_of

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
RAM_DATA = SHARED / "ram-data"
MANIFESTS = RAM_DATA / "manifests"
GOLDEN = Path(__file__).resolve().parent / "golden"

#: seed of the synthetic state dicts behind the golden files
GOLDEN_SEED = 1234

MANIFEST_NAMES = {"ram": "ram_swin_l_384", "ram_plus": "ram_plus_swin_l_384", "tag2text": "tag2text_swin_b_384"}

_TINY_SWIN = SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def _bert(encoder_width: int) -> BertConfig:
    return BertConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, encoder_width=encoder_width)


def tiny_arch(kind: str) -> RamArch:
    base = ARCHS[kind]()
    width = 512 if kind != "tag2text" else _TINY_SWIN.num_features
    return base.derive(
        swin=_TINY_SWIN,
        num_classes=50 if kind == "ram_plus" else base.num_classes,
        head=_bert(width),
        text=None if kind == "ram_plus" else _bert(width),
    )


def tiny_official_state(kind: str, seed: int = 3) -> dict[str, torch.Tensor]:
    """An official-style state dict (official keys, Swin buffers included, tied keys sharing tensors)."""
    ref = build_model(kind, arch=tiny_arch(kind))  # real tensors, to learn the tied groups
    return synthetic_state_dict(official_entries(ref), tied_groups_of(ref.state_dict()), seed)


def tiny_ram_plus_tagger(tmp: Path, classes: int = 50):
    """A factory of tiny RAM++ taggers (``classes`` classes, the golden seed), converted from an
    official-style .pth like ``phototag models add`` does; its keyword arguments go to RamTagger."""
    from phototag.tagging.ram_tagger import RamTagger
    from phototag.tagging.synthetic import official_checkpoint
    from phototag.tagging.vocab import ram_vocabulary
    from phototag.tagging.weights import convert_checkpoint

    def first_lines(name: str, dst: str) -> Path:
        lines = (RAM_DATA / "ram" / "data" / name).read_text(encoding="utf-8").splitlines()[:classes]
        (tmp / dst).write_text("\n".join(lines), encoding="utf-8")
        return tmp / dst

    torch.save(official_checkpoint(tiny_official_state("ram_plus", seed=GOLDEN_SEED)), tmp / "ckpt.pth")
    result = convert_checkpoint(tmp / "ckpt.pth", tmp / "w.safetensors", arch=tiny_arch("ram_plus"))
    vocab = ram_vocabulary(first_lines("ram_tag_list.txt", "t.txt"), first_lines("ram_tag_list_threshold.txt", "th.txt"),
                           first_lines("ram_tag_list_chinese.txt", "zh.txt"))
    return lambda **kw: RamTagger("tiny", "ram_plus", result.path, vocab, result.sha256,
                                  arch=tiny_arch("ram_plus"), **kw)
