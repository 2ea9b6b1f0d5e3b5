"""Safe loading of official RAM / RAM++ / Tag2Text checkpoints and conversion to safetensors.

The official ``.pth`` files are ``torch.save({'model': state_dict, 'optimizer': …, 'epoch': …})``
pickles of 3–5.6 GB, two thirds of which is optimizer state. Here:

* :func:`read_checkpoint` opens them with ``torch.load(weights_only=True, mmap=True)``: no code in the
  pickle can run, and tensors stay on disk until touched (the optimizer never is);
* :func:`official_key_transform` applies what the official loader does to the keys — drop the 35
  recomputed Swin buffers (``relative_position_index``, ``attn_mask``), rename ``vision_multi`` →
  ``tagging_head``, keep the default BERT ``position_ids`` when a file lacks them — and, unlike it,
  refuses relative-position tables that would need resizing; then renames the 9 patch-merging keys
  to timm's layout (our image encoder is timm's ``SwinTransformer``, see :mod:`.models.swin`);
* :func:`identify` tells the architecture and class count from the keys and shapes;
* :func:`check_state_dict` compares against our model and names every missing, unexpected or
  mis-shaped key (the official loader used ``strict=False`` and printed nothing);
* :func:`convert_checkpoint` writes the tensors inference needs to a ``.safetensors`` file, streaming
  one tensor at a time (temp file + rename). Tied tensors are stored once; the aliases are recorded
  in the file's metadata and restored by :func:`load_converted`.

Files keep the official key names and order (converted files too: same bytes as before the encoder
became timm's, so packs made earlier load as they are); timm's names exist only in memory, and
messages name keys as the files spell them.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from phototag.ingest.fingerprint import sha256_file  # noqa: F401 - packs and tests use it from here

from .base import TaggerError
from .models.ram import (
    ARCHS,
    RAM_PLUS_DESCRIPTIONS,
    RamArch,
    build_model,
)
from .models.swin import checkpoint_filter_fn, official_order, to_official_key

#: bump when the converted-file layout changes (official key names and order; unchanged by timm's Swin)
CONVERTED_FORMAT = "phototag-ram/1"
ENCODER = "visual_encoder."  #: prefix of the image encoder's keys
WINDOW_SIZE = 12
BIAS_TABLE_ROWS = (2 * WINDOW_SIZE - 1) ** 2  # 529

_DROPPED_BUFFERS = ("relative_position_index", "attn_mask")


class WeightsError(TaggerError):
    """A weights file is unreadable, unsafe, or does not fit the model it claims to be."""






# ---------------------------------------------------------------------------------------- reading
def _numpy_safe_globals() -> list:
    """Harmless globals an official checkpoint's extra entries (epoch, config) might pickle."""
    import numpy as np

    found: list = [np.dtype]
    for mod_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mod = __import__(mod_name, fromlist=["scalar"])
            found.append(mod.scalar)
            break
        except (ImportError, AttributeError):
            continue
    found += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return found


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return []


def read_checkpoint(path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict of an official ``.pth`` (its ``'model'`` entry) or of a bare state-dict file.

    Loaded with ``weights_only=True`` (no pickled code runs) and ``mmap=True`` (tensors are read
    lazily from disk). Raises :class:`WeightsError` with a readable reason otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return load_converted(path)[0]
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"PK":
            raise WeightsError(
                f"{path} looks like a truncated or damaged checkpoint ({size:,} bytes): its zip "
                "directory is missing. Download it again and compare its sha256."
            )
        raise WeightsError(
            f"{path} is not a PyTorch zip checkpoint (torch.save format); "
            "legacy or foreign formats are not supported"
        )
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        bad = _unsafe_globals(path)
        what = f" (it references {', '.join(bad[:5])})" if bad else ""
        raise WeightsError(
            f"refused to load {path}: its pickle wants to create objects or call functions that are not "
            f"plain tensors/containers{what}. phototag only loads weights-only checkpoints."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {path}: the file is truncated or damaged ({exc})") from exc
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        state = obj["model"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(f"{path} holds no state dict: expected a dict with a 'model' entry, found {keys}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{path}: state-dict entries that are not tensors: {', '.join(map(str, bad[:10]))}")
    return dict(state)


def official_key_transform(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the official ``load_checkpoint_swin*`` does to keys, minus its silent table resizing."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] in _DROPPED_BUFFERS:
            continue
        if "relative_position_bias_table" in key and value.shape[0] != BIAS_TABLE_ROWS:
            raise WeightsError(
                f"{key} has {value.shape[0]} rows; the 384-px models need {BIAS_TABLE_ROWS} "
                f"(window {WINDOW_SIZE}). This checkpoint was trained at another resolution/window, "
                "which phototag does not resize."
            )
        if "vision_multi" in key:
            key = key.replace("vision_multi", "tagging_head")
        out[key] = value
    # transformers >= 4.31 stopped saving BERT's position_ids buffer; the official loader then keeps
    # the model's own arange, so do the same instead of calling the key missing
    for prefix in ("tag_encoder.embeddings.", "text_decoder.bert.embeddings."):
        table = out.get(prefix + "position_embeddings.weight")
        if table is not None and prefix + "position_ids" not in out:
            out[prefix + "position_ids"] = torch.arange(table.shape[0]).unsqueeze(0)
    return checkpoint_filter_fn(out, ENCODER)


def file_key(key: str) -> str:
    """A model key as official checkpoints and converted files spell it (differs in 9 Swin keys)."""
    return to_official_key(key) if key.startswith(ENCODER) else key


# ---------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class CheckpointKind:
    """What a state dict is: architecture kind, class count, whether caption modules are present."""

    kind: str  #: "ram" | "ram_plus" | "tag2text"
    num_classes: int
    has_text: bool  #: tag_encoder / text_decoder tensors present

    def arch(self) -> RamArch:
        return ARCHS[self.kind]().derive(num_classes=self.num_classes)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    value = state.get(key)
    return tuple(value.shape) if value is not None else None


def identify(state: Mapping[str, torch.Tensor], check_width: bool = True) -> CheckpointKind:
    """Tell RAM / RAM++ / Tag2Text apart by their marker keys and read the class count.

    ``check_width`` also requires the released Swin width (Swin-L for RAM/RAM++, Swin-B for Tag2Text).
    """
    patch = _shape(state, "visual_encoder.patch_embed.proj.weight")
    has_text = any(k.startswith(("tag_encoder.", "text_decoder.")) for k in state)
    if patch is None:
        sample = ", ".join(list(state)[:6])
        raise WeightsError(
            "not a RAM / RAM++ / Tag2Text checkpoint: it has no 'visual_encoder.patch_embed.proj.weight' "
            f"(first keys: {sample})"
        )
    width = patch[0]
    if "reweight_scale" in state:
        label = _shape(state, "label_embed")
        if label is None or len(label) != 2 or label[0] % RAM_PLUS_DESCRIPTIONS:
            raise WeightsError(f"RAM++ checkpoint with an unusable label_embed of shape {label}")
        kind = CheckpointKind("ram_plus", label[0] // RAM_PLUS_DESCRIPTIONS, has_text)
        expected_width = 192
    elif "fc.W" in state or "label_embed.weight" in state:
        label = _shape(state, "label_embed.weight")
        if label is None:
            raise WeightsError("Tag2Text checkpoint without 'label_embed.weight'")
        kind = CheckpointKind("tag2text", label[0], has_text)
        expected_width = 128
    elif "label_embed" in state and "image_proj.weight" in state:
        label = _shape(state, "label_embed")
        kind = CheckpointKind("ram", label[0], has_text)
        expected_width = 192
    else:
        raise WeightsError(
            "not a RAM / RAM++ / Tag2Text checkpoint: none of the marker keys 'reweight_scale' (RAM++), "
            "'fc.W' / 'label_embed.weight' (Tag2Text), 'label_embed' + 'image_proj.weight' (RAM) is present"
        )
    if check_width and width != expected_width:
        raise WeightsError(
            f"{kind.kind} checkpoint with a Swin patch embedding of width {width}; the released "
            f"{kind.kind} uses {expected_width} (Swin-{'L' if expected_width == 192 else 'B'} 384)"
        )
    return kind


def _limit(names: list[str], n: int = 25) -> str:
    more = f" … and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`WeightsError` naming every missing, unexpected and mis-shaped key.

    Keys are named as the files spell them (:func:`file_key`), not by timm's in-memory names.
    """
    expected = model.state_dict()
    missing = [file_key(k) for k in expected if k not in state]
    unexpected = [file_key(k) for k in state if k not in expected]
    shapes = [
        f"{file_key(k)} {tuple(state[k].shape)} (model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_limit(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_limit(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} with another shape: {_limit(shapes)}")
    if problems:
        raise WeightsError("the weights do not fit the model — " + "; ".join(problems))


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Check, then ``load_state_dict(strict=True)`` (dtype conversion included)."""
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True)
    return model


# ------------------------------------------------------------------------------------ tied tensors
def alias_map(model: nn.Module) -> dict[str, str]:
    """``alias key → canonical key`` for tensors the model stores under several keys.

    Canonical is the key that survives in a tagging-only model (``tagging_head.*`` rather than
    ``tag_encoder.*``; the word-embedding matrix rather than the LM-head decoder).
    """
    by_id: dict[int, list[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        by_id.setdefault(id(value), []).append(key)
    aliases: dict[str, str] = {}
    for keys in by_id.values():
        if len(keys) < 2:
            continue
        canonical = min(keys, key=lambda k: (not k.startswith("tagging_head."), "cls.predictions" in k, k))
        for key in keys:
            if key != canonical:
                aliases[key] = canonical
    return aliases


def check_ties(state: Mapping[str, torch.Tensor], aliases: Mapping[str, str]) -> None:
    """Tied keys must hold equal values (they are one tensor in the model)."""
    differ = [a for a, c in aliases.items() if a in state and c in state and not torch.equal(state[a], state[c])]
    if differ:
        raise WeightsError(
            f"{len(differ)} keys that the model ties to another tensor hold different values: {_limit(differ)}"
        )


# ------------------------------------------------------------------------------------- conversion
_ST_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL",
}


def write_safetensors(path: Path | str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write a ``.safetensors`` file one tensor at a time (no full in-memory copy), atomically."""
    path = Path(path)
    header: dict = {"__metadata__": dict(metadata)}
    offset = 0
    order = list(tensors)
    for key in order:
        t = tensors[key]
        if t.dtype not in _ST_DTYPES:
            raise WeightsError(f"{key}: dtype {t.dtype} cannot be stored")
        n = t.numel() * t.element_size()
        header[key] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for key in order:
                t = tensors[key].detach().contiguous()
                if t.numel():
                    f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    kind: CheckpointKind
    sha256: str  #: of the written .safetensors file
    tensors: int
    bytes: int
    captioning: bool


def prepare_state(
    state: Mapping[str, torch.Tensor], captioning: bool | None = None, arch: RamArch | None = None
) -> tuple[dict[str, torch.Tensor], CheckpointKind, nn.Module]:
    """Transform, identify and strictly check an official state dict against a (meta) model.

    Returns the state restricted to what the chosen model needs, the kind, and that model (on the
    meta device). ``captioning=None`` keeps Tag2Text's caption modules and drops RAM's. ``arch``
    overrides the released architecture (tests use small ones); its kind must match the weights.
    """
    state = official_key_transform(state)
    kind = identify(state, check_width=arch is None)
    if arch is not None and arch.kind != kind.kind:
        raise WeightsError(f"the weights are {kind.kind}, the requested architecture is {arch.kind}")
    arch = arch or kind.arch()
    # first check the full model, so a damaged checkpoint is reported against what it claims to be
    with torch.device("meta"):
        full = build_model(kind.kind, arch=arch)
    check_state_dict(full, state)
    check_ties(state, alias_map(full))
    keep_text = kind.kind == "tag2text" if captioning is None else captioning
    if keep_text and not kind.has_text:
        raise WeightsError(f"captioning asked for, but this {kind.kind} checkpoint has no tag encoder / decoder")
    if kind.kind == "ram_plus":
        keep_text = False
    with torch.device("meta"):
        model = build_model(kind.kind, tagging_only=not keep_text, arch=arch)
    wanted = model.state_dict()
    return {k: state[k] for k in wanted}, kind, model


def write_converted(
    dest: Path | str,
    state: Mapping[str, torch.Tensor],
    kind: CheckpointKind,
    model: nn.Module,
    dtype: torch.dtype | None = None,
    extra_metadata: Mapping[str, str] | None = None,
) -> ConvertResult:
    """Write a state prepared by :func:`prepare_state` as a converted ``.safetensors``."""
    aliases = alias_map(model)
    unique = {k: v for k, v in state.items() if k not in aliases}
    if dtype is not None:
        unique = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in unique.items()}
    unique = official_order(unique, ENCODER)  # the file speaks the official layout
    captioning_kept = any(k.startswith("text_decoder.") for k in unique)
    meta = {
        "format": CONVERTED_FORMAT,
        "kind": kind.kind,
        "num_classes": str(kind.num_classes),
        "captioning": "1" if captioning_kept else "0",
        "aliases": json.dumps({file_key(a): file_key(c) for a, c in aliases.items()}, sort_keys=True),
        **dict(extra_metadata or {}),
    }
    write_safetensors(dest, unique, meta)
    dest = Path(dest)
    return ConvertResult(
        dest, kind, sha256_file(dest), len(unique), sum(v.numel() * v.element_size() for v in unique.values()),
        captioning_kept,
    )


def convert_checkpoint(
    source: Path | str,
    dest: Path | str,
    captioning: bool | None = None,
    dtype: torch.dtype | None = None,
    arch: RamArch | None = None,
) -> ConvertResult:
    """Official ``.pth`` → tagging(-and-captioning) ``.safetensors`` (fp32 unless ``dtype``)."""
    state, kind, model = prepare_state(read_checkpoint(source), captioning, arch)
    return write_converted(dest, state, kind, model, dtype)


def load_converted(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a converted file (memory-mapped) → (state dict with aliases restored, metadata).

    Keys as in the file (official layout); :func:`load_pack_model` renames them for the model.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from exc
    if meta.get("format") != CONVERTED_FORMAT:
        raise WeightsError(f"{path} is not a phototag-converted RAM file (format {meta.get('format')!r})")
    for alias, canonical in json.loads(meta.get("aliases", "{}")).items():
        if canonical not in state:
            raise WeightsError(f"{path}: alias {alias} points at missing {canonical}")
        state[alias] = state[canonical]
    return state, meta


def materialize(
    kind: CheckpointKind, state: Mapping[str, torch.Tensor], tagging_only: bool, arch: RamArch | None = None
) -> nn.Module:
    """Build the model on the meta device and adopt ``state``'s tensors without copying them.

    ``load_state_dict(strict=True, assign=True)`` after a full key/shape check; then the recomputed
    Swin buffers are filled in and the tied parameters tied again. Float tensors come out float32.
    """
    with torch.device("meta"):
        model = build_model(kind.kind, tagging_only=tagging_only, arch=arch or kind.arch())
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()
    model.tie_weights()
    model.float()
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if leftover:  # pragma: no cover - guarded by check_state_dict
        raise WeightsError(f"tensors left unloaded: {_limit(leftover)}")
    return model.eval()


def load_pack_model(
    path: Path | str, captioning: bool | None = None, arch: RamArch | None = None
) -> tuple[nn.Module, CheckpointKind]:
    """A ready (eval, fp32, CPU) model from a converted ``.safetensors`` or an official ``.pth``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, meta = load_converted(path)
        state = checkpoint_filter_fn(state, ENCODER)
        kind = identify(state, check_width=arch is None)
        has_text = meta.get("captioning") == "1"
        if captioning and not has_text:
            raise WeightsError(f"{path} was converted without the caption modules")
        keep_text = has_text if captioning is None else captioning
        if not keep_text:
            state = {k: v for k, v in state.items() if not k.startswith(("tag_encoder.", "text_decoder."))}
        return materialize(kind, state, not keep_text, arch), kind
    state, kind, _ = prepare_state(read_checkpoint(path), captioning, arch)
    keep_text = any(k.startswith("text_decoder.") for k in state)
    return materialize(kind, state, not keep_text, arch), kind


def converted_info(path: Path | str) -> dict[str, str]:
    """Metadata of a converted file without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def describe_keys(keys: Iterable[str]) -> str:
    """Top-level prefixes with counts, for messages (``visual_encoder 362, fc 2``)."""
    counts: dict[str, int] = {}
    for k in keys:
        p = k.split(".", 1)[0]
        counts[p] = counts.get(p, 0) + 1
    return ", ".join(f"{p} {n}" for p, n in counts.items())

