"""Swin Transformer v1 image encoder of RAM / RAM++ / Tag2Text, with the official key names.

Written from the description of ``ram/models/swin_transformer.py`` (Microsoft's original Swin v1
as vendored by xinyu1205/recognize-anything) so that the official state dicts load with
``strict=True``. What must match the official forward exactly:

* patch embedding = 4×4 stride-4 convolution + LayerNorm (eps 1e-5); no absolute position embedding;
* every block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``; GELU is the exact (erf) one;
* window attention with a learned relative-position bias table ``[(2w-1)², heads]`` indexed by a
  ``relative_position_index`` buffer, scale ``head_dim**-0.5``;
* odd blocks roll the grid by ``window // 2`` and add an ``attn_mask`` of **-100** (not -inf) between
  tokens from different regions; a stage whose grid is not larger than the window (the last one at
  384 px) neither shifts nor masks and uses the whole grid as one window;
* patch merging concatenates ``x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]`` → LN → Linear;
* output is ``cat([mean of the final normed tokens, tokens])`` → ``[B, 1 + H·W/1024, C]``
  (token 0 is an average, there is no learned CLS token).

``relative_position_index`` and ``attn_mask`` are recomputed here and registered as
*non-persistent* buffers: the official loader deletes them from checkpoints too, so they are not
part of our state dict.

Dropout and stochastic depth are inference no-ops and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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

#: additive attention bias between tokens of different regions in shifted windows (official value)
SHIFT_MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] → [B·nW, window², C], windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: [B·nW, window², C] → [B, H, W, C]."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """[window², window²] int64 index into the ``(2·window-1)²``-row bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)  # 2, w²
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0)  # w², w², 2
    rel = rel + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """[nW, window², window²] float mask: 0 within a region, -100 across regions."""
    region = torch.zeros(1, h, w, 1)
    label = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            region[:, hs, ws, :] = label
            label += 1
    windows = window_partition(region, window).squeeze(-1)  # nW, w²
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.where(diff != 0, SHIFT_MASK_VALUE, 0.0)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def reset_buffers(self) -> None:
        """Recompute the (non-persistent) index buffer, e.g. after building on the meta device."""
        device = self.relative_position_bias_table.device
        self.relative_position_index = relative_position_index(self.window).to(device)

    def position_bias(self) -> torch.Tensor:
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)  # heads, n, n

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.position_bias()  # heads, n, n
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype))
        else:  # fold the windows into the head axis so the [nW, n, n] mask broadcasts over images
            nw = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, nw * self.num_heads, n, n)
            shape = (bw // nw, nw * self.num_heads, n, -1)
            out = F.scaled_dot_product_attention(
                q.reshape(shape), k.reshape(shape), v.reshape(shape), attn_mask=bias.to(q.dtype)
            )
        out = out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        if resolution <= window:  # the grid is one window: no partition, no shift
            window, shift = resolution, 0
        self.resolution = resolution
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(resolution, resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def reset_buffers(self) -> None:
        """Recompute the (non-persistent) shift mask, e.g. after building on the meta device."""
        if self.shift:
            device = self.norm1.weight.device
            self.attn_mask = shifted_window_mask(self.resolution, self.resolution, self.window, self.shift).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        r = self.resolution
        h = self.norm1(x).view(b, r, r, c)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        h = self.attn(window_partition(h, self.window), self.attn_mask)
        h = window_reverse(h, self.window, r, r)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(b, length, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        r = self.resolution
        x = x.view(b, r, r, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, window: int,
                 mlp_ratio: float, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, resolution) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(nn.Module):
    """Swin v1 encoder: ``[B, 3, S, S]`` → ``[B, 1 + tokens, C]`` (token 0 = mean token)."""

    def __init__(self, config: SwinConfig):
        super().__init__()
        self.config = config
        grid = config.img_size // config.patch_size
        for i in range(len(config.depths)):
            if (grid >> i) % 2 and i < len(config.depths) - 1:
                raise ValueError(f"image size {config.img_size} does not halve cleanly at stage {i}")
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        self.layers = nn.ModuleList(
            SwinStage(
                dim=config.embed_dim * 2**i,
                resolution=grid >> i,
                depth=depth,
                num_heads=config.num_heads[i],
                window=config.window_size,
                mlp_ratio=config.mlp_ratio,
                downsample=i < len(config.depths) - 1,
            )
            for i, depth in enumerate(config.depths)
        )
        self.norm = nn.LayerNorm(config.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.img_size
        if x.shape[-2:] != (size, size):
            raise ValueError(f"expected {size}×{size} input, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
