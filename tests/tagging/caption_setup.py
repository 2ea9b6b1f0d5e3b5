"""Tiny Tag2Text caption models with deterministic weights, shared by the caption tests and the
recipe that makes their golden files (``golden/make_caption_golden.py``).

Weights come from :mod:`phototag.tagging.synthetic` (a value depends only on seed, key and shape),
so the official implementation can be given exactly the same tensors by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from phototag.tagging.models.bert import BertConfig, BertLMHeadModel, BertModel
from phototag.tagging.synthetic import RECIPE_VERSION, entries_of, synthetic_state_dict, tied_groups_of

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
VOCAB = SHARED / "ram-data" / "bert-base-uncased" / "vocab.txt"
GOLDEN = Path(__file__).resolve().parent / "golden"

SEP = 102


@dataclass(frozen=True)
class CaptionCase:
    """One deterministic caption model: BERT sizes, image width, weight seed, bias of [SEP]."""

    name: str
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 128
    image_width: int = 48
    image_tokens: int = 145
    seed: int = 0
    sep_bias: float = 0.0  #: added to the LM bias of [SEP]: larger = captions end earlier

    def text_config(self, encoder_width: int) -> BertConfig:
        return BertConfig(
            hidden_size=self.hidden,
            num_layers=self.layers,
            num_heads=self.heads,
            intermediate_size=self.intermediate,
            encoder_width=encoder_width,
        )


#: tiny models whose [SEP] bias makes captions end at different points (see the golden recipe's
#: coverage report): never / sometimes before max_length / soon after min_length. Seeds are chosen
#: so that no beam decision is closer than 2e-4 in log-probability (1e-2 for the full-size case),
#: far above float32 differences between implementations and CPUs.
TINY_CASES = (
    CaptionCase("tiny_noeos", seed=10),
    CaptionCase("tiny_eos_mid", seed=2, sep_bias=12.0),
    CaptionCase("tiny_eos_early", seed=3, sep_bias=12.0),
    CaptionCase("tiny_eos_min", seed=4, sep_bias=20.0),
)
#: other beam-search settings checked against the official code: (case name, generate() arguments)
OTHER_SETTINGS = (
    ("tiny_eos_early", {"num_beams": 5, "max_length": 30, "min_length": 5}),
    ("tiny_eos_mid", {"num_beams": 2, "max_length": 40, "min_length": 12}),
)
FULL_CASE = CaptionCase("full", hidden=768, layers=12, heads=12, intermediate=3072, image_width=1024, seed=9)

TAG_STRINGS = [
    "cat | grass",
    "beach | sea | sky | person | umbrella",
    "",
    "dog | frisbee | park | tree | run | play | green | sunny | jump | catch | field | lawn | owner"
    " | leash | ball | toy | stick | fence | bench | path | flower | bush | cloud | afternoon",
    "kitchen | table | chair | window | plant",
    "city | street | car | building | night | light",
]


def settings_name(case_name: str, settings: dict) -> str:
    """Golden file stem of a case run with non-default settings."""
    return f"{case_name}_b{settings['num_beams']}_max{settings['max_length']}_min{settings['min_length']}"


class CaptionModel(nn.Module):
    """The two text modules of Tag2Text with our implementation (official key names)."""

    def __init__(self, case: CaptionCase):
        super().__init__()
        self.tag_encoder = BertModel(case.text_config(case.image_width))
        self.text_decoder = BertLMHeadModel(case.text_config(case.hidden))


def case_state_dict(case: CaptionCase, model: nn.Module) -> dict[str, torch.Tensor]:
    """Deterministic weights for ``model`` (keys ``tag_encoder.*`` / ``text_decoder.*``)."""
    sd = model.state_dict()
    weights = synthetic_state_dict(entries_of(sd), tied_groups_of(sd), seed=case.seed)
    bias = weights["text_decoder.cls.predictions.bias"]  # also ``…decoder.bias`` (same tensor)
    bias[SEP] += case.sep_bias
    return weights


def build_model(case: CaptionCase) -> CaptionModel:
    model = CaptionModel(case).eval()
    model.load_state_dict(case_state_dict(case, model), strict=True)
    return model


def image_embeds(case: CaptionCase, batch: int) -> torch.Tensor:
    """``[batch, tokens, width]`` stand-in Swin tokens, one generator per photo index."""
    rows = []
    for i in range(batch):
        g = torch.Generator().manual_seed(1000 * case.seed + i)
        rows.append(torch.randn(case.image_tokens, case.image_width, generator=g))
    return torch.stack(rows)
