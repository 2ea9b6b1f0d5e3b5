"""``phototag finetune``: a new tagging head trained on the user's corrections → a new model version.

Built-in model (EfficientNet-Lite0). The backbone is frozen; its 1280-d pooled features of every
reviewed photo are computed once and cached in ``<home>/cache/learn/features-<weights>.npz`` (by
photo content hash). The "tagging head" is the classifier layer (1280 → 1000). A vocabulary tag's
score is what the built-in tagger computes: the softmax probability of its class, or for a
category (cat, food …) the sum over its classes — so the loss is taken on exactly the scores the
tagger thresholds, at the bar each tag must clear (a class's ``min_score``, a category's
``category_min_score``): a logistic loss on ``(score − bar) / 0.05`` signed by the user's answer
(removals and manual adds weigh 5×, "nobody gave it" 0.2×), plus a distillation term (KL to the
original head's softmax) that keeps the head close to the original where the user said nothing.
Plain cross-entropy on the scores was tried first and barely moved precision: a class at 0.15 is
*given* (its bar is 0.1) but costs little under cross-entropy. Trains on the GPU when there is
one, else on the CPU (a few seconds for a few thousand photos).

The result is written as a model version directory ``<home>/models/<name>/`` (``finetune.json`` +
``head.safetensors``) with its own weights sha256 (of the base weights' hash and the head file),
ready for ``phototag retag --model <name>``. Agreement with the user is reported before and after
on a held-out split of the reviewed photos that training never saw.

RAM and RAM++ packs: see :mod:`phototag.learn.ram_head` (Tag2Text is not supported).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phototag import atomic
from phototag.config import Settings
from phototag.learn.corrections import (
    Agreement,
    ArrayCache,
    LearnError,
    Reviewed,
    cache_dir,
    iter_prepared,
    load_reviewed,
    split_held_out,
)
from phototag.learn.versions import (
    FINETUNE_FORMAT,
    FINETUNE_FILE,
    HEAD_FILE,
    load_base_tagger,
    model_dir,
    read_version,
    write_json_atomic,
)
from phototag.library import Library
from phototag.tagging.base import TaggerError

EXPLICIT_WEIGHT = 5.0  #: weight of a removal / manual add relative to an implicit answer
DISTILL_WEIGHT = 1.0
#: weight of "nobody gave this tag and the user did not add it" (hundreds per photo, mostly obvious)
IMPLICIT_NO_WEIGHT = 0.2
MARGIN_SCALE = 0.05  #: score distance from a tag's bar at which the loss is ~e^-1 of its value at the bar


@dataclass
class FinetuneResult:
    name: str
    base: str
    path: Path | None
    weights_sha256: str | None
    epochs: int
    train_photos: int
    held_out_photos: int
    before: Agreement
    after: Agreement
    device: str
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "base": self.base, "path": str(self.path) if self.path else None,
            "weights_sha256": self.weights_sha256, "epochs": self.epochs, "train_photos": self.train_photos,
            "held_out_photos": self.held_out_photos, "held_out_before": self.before.as_dict(),
            "held_out_after": self.after.as_dict(), "device": self.device, "seconds": round(self.seconds, 2),
            "final_loss": round(self.losses[-1], 5) if self.losses else None,
        }


def _device(requested: str | None) -> str:
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise LearnError("device cuda was asked for but no CUDA GPU is available")
    return requested


# ---- the built-in model's head ------------------------------------------------------------------

_SHA_CACHE: dict[tuple[str, float, int], str] = {}


def base_weights_sha256(tagger) -> str:
    """sha256 of the backbone weights file of a built-in tagger (fine-tuned or not)."""
    path = Path(tagger.weights_path)
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


class BuiltinHead:
    """Adapter: features, scores and tag selection of the built-in model, for a given classifier."""

    def __init__(self, tagger):
        from phototag.tagging.builtin import BuiltinTagger

        if not isinstance(tagger, BuiltinTagger):
            raise LearnError(f"fine-tuning supports the built-in model (and its versions), not {tagger.name}")
        self.tagger = tagger
        table = tagger.tags
        self.vocabulary = list(table.vocabulary)
        self.trainable = [i for i, m in enumerate(table.members) if m]  # tags with classes (not faces)
        members = np.zeros((len(table.class_tags), len(self.trainable)), dtype=np.float32)
        for j, i in enumerate(self.trainable):
            members[list(table.members[i]), j] = 1.0
        self.members = members
        # the score a tag needs to be given: a class's min_score, a category's category_min_score
        n_classes = len(table.class_tags)
        self.bars = np.array([tagger.min_score if i < n_classes else tagger.category_min_score
                              for i in self.trainable], dtype=np.float32)

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        fc = self.tagger._load().get_classifier()
        return fc.weight.detach().float().cpu().numpy(), fc.bias.detach().float().cpu().numpy()

    def features(self, settings: Settings, items: Sequence[Reviewed], device: str, progress=None) -> dict[str, np.ndarray]:
        """Pooled backbone features (cached by base weights and photo hash)."""
        import torch

        from phototag.tagging.builtin import BuiltinTagger, load_model
        from phototag.tagging.models.efficientnet import logits_and_features

        cache = ArrayCache(cache_dir(settings) / f"features-builtin-{base_weights_sha256(self.tagger)[:16]}.npz")
        todo = [it for it in items if it.sha256 not in cache]
        if progress:
            progress("total", len(todo))
        if todo:
            plain = BuiltinTagger(faces=False, weights=self.tagger.weights_path)  # prepare without face detection
            model = load_model(self.tagger.weights_path).to(device)
            workers = int(settings.get("decode_workers") or 0) or (os.cpu_count() or 2)
            for batch_items, prepared in iter_prepared(plain.prepare, todo, 32, workers):
                pixels = torch.stack([p.pixels for p in prepared]).to(device)
                with torch.inference_mode():
                    _, pooled = logits_and_features(model, pixels)
                for item, vector in zip(batch_items, pooled.float().cpu().numpy()):
                    cache.rows[item.sha256] = vector
                if progress:
                    progress("advance", len(batch_items))
                cache.save()
        return {it.sha256: cache.rows[it.sha256] for it in items if it.sha256 in cache}

    def given_tags(self, weight: np.ndarray, bias: np.ndarray, features: np.ndarray) -> list[set[str]]:
        """The (non-face) tags the built-in tagger gives with this classifier."""
        from phototag.tagging.builtin import Faces

        logits = features @ weight.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        dummy = np.zeros(features.shape[1], dtype=np.float32)
        return [{t.name for t in self.tagger._prediction(p.astype(np.float32), dummy, Faces()).tags} for p in probs]


# ---- training -----------------------------------------------------------------------------------


def _targets(head: BuiltinHead, items: Sequence[Reviewed]) -> tuple[np.ndarray, np.ndarray]:
    names = [head.vocabulary[i] for i in head.trainable]
    col = {n: j for j, n in enumerate(names)}
    y = np.zeros((len(items), len(names)), dtype=np.float32)
    w = np.full_like(y, IMPLICIT_NO_WEIGHT)
    for r, it in enumerate(items):
        for n in it.yes:
            if n in col:
                y[r, col[n]] = 1.0
                w[r, col[n]] = 1.0
        for n in it.removed | it.added:
            if n in col:
                w[r, col[n]] = EXPLICIT_WEIGHT
    return y, w


def train_head(
    head: BuiltinHead, features: np.ndarray, targets: np.ndarray, weights: np.ndarray, epochs: int, device: str,
    lr: float = 1e-3, seed: int = 0, distill: float = DISTILL_WEIGHT,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    import torch

    torch.manual_seed(seed)
    distill_weight = distill
    w0, b0 = head.classifier()
    x = torch.from_numpy(features).to(device)
    y = torch.from_numpy(targets).to(device)
    wt = torch.from_numpy(weights).to(device)
    members = torch.from_numpy(head.members).to(device)
    bars = torch.from_numpy(head.bars).to(device)
    fc = torch.nn.Linear(w0.shape[1], w0.shape[0]).to(device)
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(w0))
        fc.bias.copy_(torch.from_numpy(b0))
        teacher = torch.log_softmax(x @ torch.from_numpy(w0).to(device).T + torch.from_numpy(b0).to(device), dim=-1)
    opt = torch.optim.Adam(fc.parameters(), lr=lr)
    batch = 256
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=device)
        total = 0.0
        for start in range(0, len(x), batch):
            idx = perm[start:start + batch]
            log_probs = torch.log_softmax(fc(x[idx]), dim=-1)
            scores = (log_probs.exp() @ members).clamp(1e-6, 1 - 1e-6)
            # logistic loss on the distance to the tagger's own bar: the decision, not the raw score,
            # is what the user judged (a class at 0.15 is *given*, however small 0.15 looks)
            margin = (scores - bars) / MARGIN_SCALE * (2 * y[idx] - 1)
            bce = (torch.nn.functional.softplus(-margin) * wt[idx]).sum() / len(idx)
            kl = torch.nn.functional.kl_div(log_probs, teacher[idx], log_target=True, reduction="batchmean")
            loss = bce + distill_weight * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    return fc.weight.detach().cpu().numpy(), fc.bias.detach().cpu().numpy(), losses


def _agreement(head: BuiltinHead, items, feats, weight, bias) -> Agreement:
    result = Agreement()
    if not items:
        return result
    universe = {head.vocabulary[i] for i in head.trainable}
    given = head.given_tags(weight, bias, np.stack([feats[it.sha256] for it in items]))
    for it, g in zip(items, given):
        result.add(g, it.yes, universe)
    return result


def next_version_name(settings: Settings, base: str) -> str:
    root = base.split("-ft")[0]
    n = 1
    while (settings.models_dir / f"{root}-ft{n}").exists():
        n += 1
    return f"{root}-ft{n}"


def finetune(
    library: Library, model: str | None = None, *, epochs: int = 100, name: str | None = None,
    held_out: float = 0.3, device: str | None = None, write: bool = True, progress=None, lr: float = 3e-3,
    tagger=None, distill: float = DISTILL_WEIGHT,
) -> FinetuneResult:
    """Fine-tune the head of ``model`` (or of ``tagger``, a built-in tagger whose settings the new
    version keeps) on the reviewed photos; write the new version unless ``write`` is False."""
    import time

    started = time.perf_counter()
    settings = library.settings
    base_name = model or settings.default_model
    tagger = tagger or load_base_tagger(settings, base_name)
    device = _device(device or settings.get("device"))
    from phototag.learn.ram_head import is_ram_tagger

    if is_ram_tagger(tagger):
        return _finetune_ram(library, tagger, base_name, epochs=epochs, name=name, held_out=held_out, device=device,
                             write=write, progress=progress, lr=lr, started=started)
    head = BuiltinHead(tagger)
    with library.session() as session:
        reviewed = load_reviewed(session)
    if len(reviewed) < 2:
        raise LearnError("too few corrected photos to fine-tune: fix some tags with `phototag tag add/remove` first")
    feats = head.features(settings, reviewed, device, progress)
    reviewed = [it for it in reviewed if it.sha256 in feats]
    train, held = split_held_out(reviewed, held_out)
    w0, b0 = head.classifier()
    before = _agreement(head, held, feats, w0, b0)

    def fit(items):
        y, wt = _targets(head, items)
        return train_head(head, np.stack([feats[it.sha256] for it in items]), y, wt, epochs, device, lr=lr,
                          distill=distill)

    weight, bias, losses = fit(train)
    after = _agreement(head, held, feats, weight, bias)
    result = FinetuneResult(
        name=name or next_version_name(settings, base_name), base=base_name, path=None, weights_sha256=None,
        epochs=epochs, train_photos=len(train), held_out_photos=len(held), before=before, after=after,
        device=device, losses=losses,
    )
    if write:
        # the version that is registered learns from every reviewed photo
        if held:
            weight, bias, _ = fit(reviewed)
        result.path, result.weights_sha256 = save_version(settings, result, tagger, weight, bias, len(reviewed))
    result.seconds = time.perf_counter() - started
    tagger.close()
    return result


def _finetune_ram(library, tagger, base_name, *, epochs, name, held_out, device, write, progress, lr, started):
    import time

    from phototag.learn.ram_head import RamHead

    settings = library.settings
    head = RamHead(tagger)
    with library.session() as session:
        reviewed = load_reviewed(session)
    if len(reviewed) < 2:
        raise LearnError("too few corrected photos to fine-tune: fix some tags with `phototag tag add/remove` first")
    feats = head.features(settings, reviewed, device, progress)
    reviewed = [it for it in reviewed if it.sha256 in feats]
    train, held = split_held_out(reviewed, held_out)
    before = head.agreement(head.head_view(device), held, feats, device)
    trained, losses = head.train(train, feats, epochs, device, lr)
    after = head.agreement(trained, held, feats, device)
    result = FinetuneResult(
        name=name or next_version_name(settings, base_name), base=base_name, path=None, weights_sha256=None,
        epochs=epochs, train_photos=len(train), held_out_photos=len(held), before=before, after=after,
        device=device, losses=losses,
    )
    if write:
        final = trained if not held else head.train(reviewed, feats, epochs, device, lr)[0]
        result.path, result.weights_sha256 = save_ram_version(settings, result, tagger, head.head_state(final),
                                                              len(reviewed))
    result.seconds = time.perf_counter() - started
    return result


def save_ram_version(settings: Settings, result: FinetuneResult, tagger, state: dict, photos: int) -> tuple[Path, str]:
    from safetensors.torch import save_file

    target = model_dir(settings, result.name)
    if target.exists() and not (target / FINETUNE_FILE).exists():
        raise LearnError(f"{target} exists and is not a fine-tuned version: pick another --name")
    target.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(target / HEAD_FILE) as tmp:
        save_file(state, str(tmp))
    head_sha = hashlib.sha256((target / HEAD_FILE).read_bytes()).hexdigest()
    weights_sha = hashlib.sha256(f"{tagger.weights_sha256}:{head_sha}".encode()).hexdigest()
    write_json_atomic(target / FINETUNE_FILE, {
        "format": FINETUNE_FORMAT, "name": result.name, "base": "pack", "base_pack": tagger.name,
        "based_on": result.base, "kind": tagger.kind, "base_weights_sha256": tagger.weights_sha256,
        "head_sha256": head_sha, "weights_sha256": weights_sha,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "epochs": result.epochs,
        "photos": photos, "held_out": {"before": result.before.as_dict(), "after": result.after.as_dict()},
    })
    return target, weights_sha


def save_version(settings: Settings, result: FinetuneResult, tagger, weight, bias, photos: int) -> tuple[Path, str]:
    import torch
    from safetensors.torch import save_file

    target = model_dir(settings, result.name)
    if target.exists() and not (target / FINETUNE_FILE).exists():
        raise LearnError(f"{target} exists and is not a fine-tuned version: pick another --name")
    target.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(target / HEAD_FILE) as tmp:
        save_file({"weight": torch.from_numpy(np.ascontiguousarray(weight)),
                   "bias": torch.from_numpy(np.ascontiguousarray(bias))}, str(tmp))
    head_sha = hashlib.sha256((target / HEAD_FILE).read_bytes()).hexdigest()
    base_sha = base_weights_sha256(tagger)
    weights_sha = hashlib.sha256(f"{base_sha}:{head_sha}".encode()).hexdigest()
    write_json_atomic(target / FINETUNE_FILE, {
        "format": FINETUNE_FORMAT, "name": result.name, "base": "builtin", "based_on": result.base,
        "base_weights_sha256": base_sha, "head_sha256": head_sha, "weights_sha256": weights_sha,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "epochs": result.epochs,
        "photos": photos, "settings": tagger.settings(),
        "training": {"loss": "logistic at the tag's bar", "margin_scale": MARGIN_SCALE,
                     "explicit_weight": EXPLICIT_WEIGHT, "implicit_no_weight": IMPLICIT_NO_WEIGHT},
        "held_out": {"before": result.before.as_dict(), "after": result.after.as_dict()},
    })
    return target, weights_sha


# ---- loading a version --------------------------------------------------------------------------


def _finetuned_class():
    from phototag.tagging.builtin import BuiltinTagger

    class FinetunedBuiltinTagger(BuiltinTagger):
        """The built-in tagger with a fine-tuned classifier (see :mod:`phototag.learn.finetune`)."""

        def __init__(self, name: str, head_path: Path, version: dict, **kwargs):
            super().__init__(**kwargs)
            self.name = name
            self.head_path = head_path
            self.version = version

        @property
        def base_weights_sha256(self) -> str:
            return base_weights_sha256(self)

        @property
        def weights_sha256(self) -> str:  # type: ignore[override]
            return self.version["weights_sha256"]

        def settings(self) -> dict[str, Any]:
            return {**super().settings(), "finetuned_head_sha256": self.version["head_sha256"],
                    "base_weights_sha256": self.version["base_weights_sha256"]}

        def _load(self):
            import torch
            from safetensors.torch import load_file

            from phototag.tagging.builtin import load_model

            with self._lock:
                if self._model is None:
                    model = load_model(self.weights_path)
                    state = load_file(str(self.head_path))
                    fc = model.get_classifier()
                    if set(state) != {"weight", "bias"} or state["weight"].shape != fc.weight.shape:
                        raise TaggerError(f"{self.head_path}: not a head for EfficientNet-Lite0 "
                                          f"(keys {sorted(state)})")
                    with torch.no_grad():
                        fc.weight.copy_(state["weight"])
                        fc.bias.copy_(state["bias"])
                    self._model = model.eval()
                return self._model

    return FinetunedBuiltinTagger


def load_finetuned_tagger(settings: Settings, name: str, version: dict | None = None):
    version = version or read_version(settings, name)
    if version is None:
        raise TaggerError(f"{name}: not a fine-tuned model version")
    head_path = model_dir(settings, name) / HEAD_FILE
    if not head_path.is_file():
        raise TaggerError(f"{name}: {head_path} is missing")
    if version.get("base") == "pack":
        from phototag.learn.ram_head import finetuned_ram_tagger
        from phototag.tagging.registry import get_base_tagger

        inner = get_base_tagger(settings, version["base_pack"])
        if inner.weights_sha256 != version["base_weights_sha256"]:
            raise TaggerError(f"{name} was fine-tuned from other weights of pack {version['base_pack']!r}")
        return finetuned_ram_tagger(inner, name, head_path, version)
    if version.get("base") != "builtin":
        raise TaggerError(f"{name}: fine-tuned versions of {version.get('base')!r} cannot be loaded")
    kwargs = {k: v for k, v in (version.get("settings") or {}).items()
              if k in ("top_k", "min_score", "category_min_score", "faces", "face_min_score", "portrait_min_face",
                       "precision")}
    if kwargs.get("face_min_score") is None:
        kwargs.pop("face_min_score", None)
    tagger = _finetuned_class()(name, head_path, version, **kwargs)
    if base_weights_sha256(tagger) != version["base_weights_sha256"]:
        raise TaggerError(f"{name} was fine-tuned from other built-in weights "
                          f"({version['base_weights_sha256'][:12]}…, now {tagger.base_weights_sha256[:12]}…)")
    return tagger
