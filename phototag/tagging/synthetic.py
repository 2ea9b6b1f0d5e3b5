"""Deterministic synthetic state dicts in the shape of the official RAM / RAM++ / Tag2Text checkpoints.

Real weights cannot be shipped or downloaded in tests, so tests, benchmarks and the cross-check against
the official implementation use state dicts generated here from a list of ``(key, shape, dtype)``
entries — the manifests in ``shared/ram-data/manifests`` for full-size models, or a model's own
``state_dict()`` for tiny test configurations.

Recipe (version 1; golden files under ``tests/tagging/golden`` depend on it — bump
:data:`RECIPE_VERSION` when changing anything here):

* every tensor is drawn from its own ``torch.Generator`` seeded with
  ``(seed * 1_000_003 + crc32(key)) mod 2**63``, so a value depends only on (seed, key, shape), never
  on which other keys are present or their order;
* tied keys (``tied`` groups) share one tensor, drawn for the lexicographically smallest key;
* values are scaled so activations stay O(1) through the depth of the networks:
  matrices ``randn / sqrt(fan_in)``; LayerNorm weights ``1 + 0.1·randn``, biases ``0.1·randn`` (norms)
  or ``0.02·randn`` (others); relative-position bias tables ``0.5·randn``; ``label_embed``
  (RAM/RAM++) and ``label_embed.weight`` (Tag2Text) plain ``randn`` so that classes get visibly
  different logits; BERT embeddings ``0.5·randn``; ``reweight_scale = log(1/0.07)``;
* buffers get their true values: ``position_ids = arange``, Swin ``relative_position_index`` and
  ``attn_mask`` computed as the official constructor does (by timm's Swin, which computes them alike).

Keys are always the official ones: :func:`official_entries` lists a model's state dict (timm Swin
names inside) under them, with the Swin buffers an official state dict has.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from timm.models.swin_transformer import SwinTransformerBlock, get_relative_position_index
from torch import nn

from .models.swin import official_order

RECIPE_VERSION = 1

Entry = tuple[str, tuple[int, ...], torch.dtype]


def read_manifest(path: Path | str) -> list[Entry]:
    """Read ``<model>.tsv`` (``key<TAB>[shape]<TAB>dtype``) into entries, in state-dict order."""
    entries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        key, shape, dtype = line.split("\t")
        entries.append((key, tuple(json.loads(shape)), getattr(torch, dtype)))
    return entries


def read_tied(path: Path | str) -> list[list[str]]:
    """Read ``<model>.tied.tsv``: one tab-separated group of aliased keys per line."""
    text = Path(path).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def entries_of(state_dict: Mapping[str, torch.Tensor]) -> list[Entry]:
    return [(k, tuple(v.shape), v.dtype) for k, v in state_dict.items()]


def official_entries(model: nn.Module) -> list[Entry]:
    """A RAM-family model's state dict as the official one lists it: official Swin key names and
    order, plus the Swin ``relative_position_index`` / ``attn_mask`` buffers (appended)."""
    entries = entries_of(official_order(model.state_dict(), "visual_encoder."))
    for name, buf in model.named_buffers():
        if name.endswith(("relative_position_index", "attn_mask")) and buf is not None:
            entries.append((name, tuple(buf.shape), buf.dtype))  # block names: same in both layouts
    return entries


def shift_mask(resolution: int, window: int) -> torch.Tensor:
    """``[nW, window², window²]`` mask of a shifted Swin block: 0 within a region, -100 across."""
    block = SwinTransformerBlock(4, (resolution, resolution), num_heads=1, window_size=window,
                                 shift_size=window // 2)
    return block.attn_mask


def tied_groups_of(state_dict: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Groups of keys whose tensors share storage (as ``torch.save`` would keep them)."""
    by_ptr: dict[tuple[int, int], list[str]] = {}
    for key, value in state_dict.items():
        if value.device.type == "meta":
            continue
        by_ptr.setdefault((value.untyped_storage().data_ptr(), value.storage_offset()), []).append(key)
    return [keys for keys in by_ptr.values() if len(keys) > 1]


def _generator(seed: int, key: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
    return g


def _is_norm(key: str) -> bool:
    module = key.rsplit(".", 1)[0].rsplit(".", 1)[-1]
    return "norm" in module.lower()


def synthetic_tensor(key: str, shape: Sequence[int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """The value of one state-dict entry under the recipe above."""
    shape = tuple(shape)
    if key.endswith("position_ids"):
        return torch.arange(shape[-1], dtype=dtype).expand(shape).clone()
    if key.endswith("relative_position_index"):
        window = math.isqrt(shape[0])
        return get_relative_position_index(window, window).to(dtype)
    if key.endswith("attn_mask"):
        n_windows, n, _ = shape
        window = math.isqrt(n)
        resolution = window * math.isqrt(n_windows)
        return shift_mask(resolution, window).to(dtype)
    if key == "reweight_scale":
        return torch.tensor(math.log(1 / 0.07), dtype=dtype).expand(shape).clone()
    g = _generator(seed, key)
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    if key == "label_embed":
        pass  # std-1 rows: label queries as varied as the image features, so classes differ
    elif key.endswith("relative_position_bias_table"):
        x = x * 0.5
    elif _is_norm(key) and leaf == "weight":
        x = 1.0 + 0.1 * x
    elif _is_norm(key) and leaf == "bias":
        x = 0.1 * x
    elif key == "label_embed.weight":
        pass
    elif "embeddings" in key and leaf == "weight":
        x = x * 0.5
    elif len(shape) >= 2 and leaf != "b":
        fan_in = shape[-1] if len(shape) == 3 and shape[0] == 1 else math.prod(shape[1:])
        x = x / math.sqrt(fan_in)
    else:
        x = 0.02 * x
    return x.to(dtype)


def synthetic_state_dict(
    entries: Iterable[Entry], tied: Sequence[Sequence[str]] = (), seed: int = 0
) -> dict[str, torch.Tensor]:
    """A state dict with every entry filled per the recipe; tied keys share one tensor."""
    entries = list(entries)
    canonical: dict[str, str] = {}
    for group in tied:
        first = min(group)
        for key in group:
            canonical[key] = first
    shapes = {k: (s, d) for k, s, d in entries}
    out: dict[str, torch.Tensor] = {}
    made: dict[str, torch.Tensor] = {}
    for key, shape, dtype in entries:
        src = canonical.get(key, key)
        if src not in made:
            src_shape, src_dtype = shapes.get(src, (shape, dtype))
            made[src] = synthetic_tensor(src, src_shape, src_dtype, seed)
        out[key] = made[src]
    return out


def official_checkpoint(state_dict: Mapping[str, torch.Tensor], epoch: int = 1) -> dict:
    """Wrap a state dict the way the official training scripts save it (plain types only)."""
    some = next(iter(state_dict.values()))
    return {
        "model": dict(state_dict),
        "optimizer": {
            "state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(some)}},
            "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "weight_decay": 0.05, "params": [0]}],
        },
        "config": {"image_size": 384, "batch_size_train": 26},
        "epoch": epoch,
    }
