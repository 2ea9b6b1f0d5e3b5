"""Swin Transformer v1 image encoder of RAM / RAM++ / Tag2Text: timm's ``SwinTransformer``.

RAM's ``ram/models/swin_transformer.py`` is Microsoft's original Swin v1; timm's
``SwinTransformer`` is the same network (patch embedding 4×4 + LayerNorm, no absolute position
embedding, window attention with a relative-position bias table and ``head_dim**-0.5``, shifted
windows masked with **-100**, exact GELU, the same patch-merging order, a last stage whose 12×12
grid is one window that neither shifts nor masks). What this module adds:

* :class:`SwinConfig` and the two released configurations;
* :class:`RamSwin`, whose ``forward`` returns what RAM's encoder returns:
  ``cat([mean of the final normed tokens, tokens])`` → ``[B, 1 + H·W/1024, C]`` (token 0 is an
  average, there is no learned CLS token);
* the key remap between the two layouts. The official encoder downsamples at the *end* of stage
  ``i`` (``layers.0.downsample`` … ``layers.2.downsample``), timm at the *start* of stage ``i+1``
  (``layers.1.downsample`` … ``layers.3.downsample``); every other key is the same. Files on disk —
  official checkpoints and phototag's converted ``.safetensors`` — keep the official names:
  :func:`to_timm_key` is applied on load, :func:`to_official_key` / :func:`official_order` on write
  and in messages (see :mod:`phototag.tagging.weights`).

``relative_position_index`` and ``attn_mask`` are non-persistent buffers in timm (the official loader
deletes them from checkpoints too). Dropout and stochastic depth are off (inference; the official
``drop_path_rate=0.1`` is inactive in eval anyway).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, TypeVar

import torch
from timm.models.swin_transformer import SwinTransformer, WindowAttention


@dataclass(frozen=True)
class SwinConfig:
    """Hyper-parameters of one Swin v1 encoder (``configs/swin/config_swin*_384.json``)."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int = 12
    img_size: int = 384
    patch_size: int = 4
    mlp_ratio: float = 4.0

    @property
    def num_features(self) -> int:
        """Channel width of the output tokens (``vision_width``)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def num_tokens(self) -> int:
        """Tokens returned per image, the average token included."""
        side = self.img_size // self.patch_size // 2 ** (len(self.depths) - 1)
        return 1 + side * side


SWIN_L_384 = SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
SWIN_B_384 = SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))


class RamSwin(SwinTransformer):
    """timm's Swin v1 without a head: ``[B, 3, S, S]`` → ``[B, 1 + tokens, C]`` (token 0 = mean token)."""

    def __init__(self, config: SwinConfig):
        grid = config.img_size // config.patch_size
        for i in range(len(config.depths) - 1):
            if (grid >> i) % 2:
                raise ValueError(f"image size {config.img_size} does not halve cleanly at stage {i}")
        super().__init__(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depths=config.depths,
            num_heads=config.num_heads,
            window_size=config.window_size,
            mlp_ratio=config.mlp_ratio,
            num_classes=0,
            global_pool="",
            drop_path_rate=0.0,
            weight_init="skip",  # every weight comes from a checkpoint; skip timm's second init pass
        )
        self.config = config
        if not hasattr(WindowAttention, "init_non_persistent_buffers"):  # reset_buffers needs it
            import timm

            raise RuntimeError(f"timm {timm.__version__} is too old for phototag's Swin encoder (tested: 1.0.31)")
        for module in self.modules():
            if isinstance(module, WindowAttention):
                # timm marks its SDPA path "experimental" for Swin and defaults to q·kᵀ + softmax;
                # SDPA is the faster one on CPU (bench/bench_swin_impl.py) and matches the goldens
                module.fused_attn = True

    def reset_buffers(self) -> None:
        """Recompute the non-persistent buffers (index, shift masks), e.g. after loading onto the meta device."""
        device = self.patch_embed.proj.weight.device
        for module in self.modules():
            for name, buf in list(module.named_buffers(recurse=False)):
                if buf is not None and buf.device.type == "meta":
                    setattr(module, name, torch.empty_like(buf, device=device))
        for module in self.modules():
            if hasattr(module, "init_non_persistent_buffers"):
                module.init_non_persistent_buffers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.img_size
        if x.shape[-2:] != (size, size):
            raise ValueError(f"expected {size}×{size} input, got {tuple(x.shape[-2:])}")
        x = self.forward_features(x).flatten(1, 2)  # B, H·W, C (normed)
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)


# ------------------------------------------------------------------------------ official ↔ timm keys
_OFFICIAL_DOWNSAMPLE = re.compile(r"^((?:.+\.)?layers\.)(\d+)(\.downsample\.)")

V = TypeVar("V")


def to_timm_key(key: str) -> str:
    """Official Swin v1 key → timm's: ``layers.{i}.downsample.*`` → ``layers.{i+1}.downsample.*``."""
    return _OFFICIAL_DOWNSAMPLE.sub(lambda m: f"{m[1]}{int(m[2]) + 1}{m[3]}", key)


def to_official_key(key: str) -> str:
    """timm Swin key → the official one (inverse of :func:`to_timm_key`)."""
    return _OFFICIAL_DOWNSAMPLE.sub(lambda m: f"{m[1]}{int(m[2]) - 1}{m[3]}", key)


def is_official_layout(keys: Iterable[str], prefix: str = "") -> bool:
    """True when the encoder keys under ``prefix`` are in the official layout (stage 0 downsamples).

    Same test as timm's own ``checkpoint_filter_fn``; timm's layout never has ``layers.0.downsample``.
    """
    return any(k.startswith(f"{prefix}layers.0.downsample.") for k in keys)


def checkpoint_filter_fn(state: Mapping[str, V], prefix: str = "") -> dict[str, V]:
    """Official-layout encoder keys (under ``prefix``) → timm's; pure, drops and resizes nothing.

    A state already in timm's layout comes back unchanged, so applying it twice is harmless.
    """
    if not is_official_layout(state, prefix):
        return dict(state)
    return {(to_timm_key(k) if k.startswith(prefix) else k): v for k, v in state.items()}


def official_order(state: Mapping[str, V], prefix: str = "") -> dict[str, V]:
    """A timm-layout state under official names, in the official model's key order.

    The order is the official ``state_dict()``'s: the same stage sequence, but official patch
    merging registers ``reduction`` before ``norm`` (timm: ``norm`` first). Converted files are
    written in this order, so converting a checkpoint gives the same bytes as before timm.
    """
    out: dict[str, V] = {}
    held: dict[str, V] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            key = to_official_key(key)
        if ".downsample.norm." in key and key.startswith(prefix):
            held[key] = value  # after its stage's reduction
            continue
        out[key] = value
        if key.endswith(".downsample.reduction.weight"):
            out.update(held)
            held.clear()
    out.update(held)
    return out
