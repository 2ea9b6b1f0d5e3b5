"""Fine-tuning the tagging head of a RAM / RAM++ pack on the user's corrections.

Frozen: the Swin backbone, ``image_proj`` and the label embeddings. Cached in the home: the
``image_proj`` tokens of each reviewed photo (``[1 + tokens, 512]``, float16). Trained: the
cross-attention ``tagging_head``, ``wordvec_proj`` and ``fc``.

The tagging head has no self-attention between label queries, so each class's logit depends only
on its own query: a training step evaluates just the classes the batch has labels for plus a few
random others, which makes a step about ``4585 / k`` times cheaper than a full forward and lets a
CPU train on a few thousand photos. The loss is the logistic loss at each class's own threshold
(``logit − logit(threshold)``, signed by the user's answer; removals and adds weigh 5×, "nobody gave
it" 0.2×) plus a distillation term (squared logit change on the same classes) toward the original head.

Tag2Text (group-wise ``fc``, no ``wordvec_proj``) is not supported.
"""

from __future__ import annotations

import copy
import os
from typing import Sequence

import numpy as np

from phototag.config import Settings
from phototag.learn.corrections import Agreement, ArrayCache, LearnError, Reviewed, cache_dir, iter_prepared
from phototag.tagging.base import TaggerError

HEAD_MODULES = ("tagging_head", "wordvec_proj", "fc")
EXPLICIT_WEIGHT = 5.0
IMPLICIT_NO_WEIGHT = 0.2
RANDOM_CLASSES = 32
DISTILL_WEIGHT = 0.1


def is_ram_tagger(tagger) -> bool:
    from phototag.tagging.ram_tagger import RamTagger

    return isinstance(tagger, RamTagger)


class RamHead:
    def __init__(self, tagger):
        from phototag.tagging.models.ram import RAM

        self.tagger = tagger
        self.model = tagger.load()
        if not isinstance(self.model, RAM):  # RAMPlus is a RAM
            raise LearnError(f"fine-tuning supports RAM and RAM++ packs, not {tagger.kind}")
        self.vocabulary = list(tagger.vocabulary())
        thresholds = np.clip(np.asarray(tagger.vocab.effective_thresholds, dtype=np.float64), 1e-4, 1 - 1e-4)
        self.bars = np.log(thresholds / (1 - thresholds)).astype(np.float32)  # logit of each threshold

    # ---- features -------------------------------------------------------------------------------
    def features(self, settings: Settings, items: Sequence[Reviewed], device: str, progress=None) -> dict[str, np.ndarray]:
        import torch

        cache = ArrayCache(cache_dir(settings) / f"features-{self.tagger.kind}-{self.tagger.weights_sha256[:16]}.npz",
                           dtype=np.float16)
        todo = [it for it in items if it.sha256 not in cache]
        if progress:
            progress("total", len(todo))
        workers = int(settings.get("decode_workers") or 0) or (os.cpu_count() or 2)
        model = self.model
        for batch_items, prepared in iter_prepared(self.tagger.prepare, todo, 8, workers):
            x = torch.stack(prepared).to(next(model.parameters()).device)
            with torch.inference_mode():
                emb = model.image_embeds(x.to(next(model.parameters()).dtype)).float().cpu().numpy()
            for item, e in zip(batch_items, emb):
                cache.rows[item.sha256] = e.reshape(-1).astype(np.float16)
                cache.extra[item.sha256] = list(e.shape)
            if progress:
                progress("advance", len(batch_items))
            cache.save()
        return {it.sha256: cache.rows[it.sha256].astype(np.float32).reshape(cache.extra[it.sha256])
                for it in items if it.sha256 in cache}

    # ---- the head on a subset of classes ----------------------------------------------------------
    def head_view(self, device: str):
        """A copy of just the head (trainable modules copied, frozen label embeddings shared, float32):
        the backbone is not copied, so training a full-size RAM++ needs little memory."""
        import torch

        from phototag.tagging.models.ram import RAMPlus

        view = torch.nn.Module()
        for name in HEAD_MODULES:
            setattr(view, name, copy.deepcopy(getattr(self.model, name)).float().to(device))
        view.label_embed = self.model.label_embed.detach().float().to(device)
        view.plus = isinstance(self.model, RAMPlus)
        if view.plus:
            view.reweight_scale = self.model.reweight_scale.detach().float().to(device)
        view.num_classes = self.model.arch.num_classes
        return view

    @staticmethod
    def subset_logits(model, embeds, classes):
        """Logits ``[B, k]`` of ``classes`` only (exact: label queries do not attend to each other)."""
        import torch.nn.functional as F

        b = embeds.shape[0]
        if model.plus:
            per_class = model.label_embed.shape[0] // model.num_classes
            table = model.label_embed.view(-1, per_class, model.label_embed.shape[1])[classes]  # k, D, 512
            cls = embeds[:, 0]
            cls = cls / cls.norm(dim=-1, keepdim=True)
            sims = model.reweight_scale.exp() * cls @ table.reshape(-1, table.shape[-1]).t()
            weights = F.softmax(sims.view(b, len(classes), per_class), dim=2)
            q = F.relu(model.wordvec_proj(torch_einsum("bcd,cde->bce", weights, table)))
        else:
            q = F.relu(model.wordvec_proj(model.label_embed[classes])).unsqueeze(0).expand(b, -1, -1)
        return model.fc(model.tagging_head.tag_queries(q, embeds)).squeeze(-1)

    def head_state(self, view) -> dict:
        return {k: v.detach().float().cpu().contiguous() for k, v in view.state_dict().items()
                if k.split(".", 1)[0] in HEAD_MODULES}

    def given(self, view, feats: np.ndarray, device: str) -> list[set[str]]:
        import torch

        out = []
        all_classes = torch.arange(len(self.vocabulary), device=device)
        with torch.inference_mode():
            for start in range(0, len(feats), 8):
                x = torch.from_numpy(feats[start:start + 8]).to(device)
                logits = torch.cat([self.subset_logits(view, x, all_classes[c:c + 512])
                                    for c in range(0, len(all_classes), 512)], dim=1).float().cpu().numpy()
                for row in logits:
                    out.append({self.vocabulary[i] for i in np.flatnonzero(row > self.bars)})
        return out

    def agreement(self, model, items, feats, device) -> Agreement:
        result = Agreement()
        if not items:
            return result
        universe = set(self.vocabulary)
        for it, g in zip(items, self.given(model, np.stack([feats[it.sha256] for it in items]), device)):
            result.add(g, it.yes, universe)
        return result

    # ---- training -------------------------------------------------------------------------------
    def train(self, items: Sequence[Reviewed], feats, epochs: int, device: str, lr: float, seed: int = 0):
        """A trained copy of the model (only the head modules change) and the loss per epoch."""
        import torch

        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        student = self.head_view(device)
        teacher = self.head_view(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        params = list(student.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        index = {n: i for i, n in enumerate(self.vocabulary)}
        labels = []
        for it in items:
            yes = {index[n] for n in it.yes if n in index}
            explicit = {index[n] for n in (it.removed | it.added) if n in index}
            labels.append((yes, explicit))
        bars = torch.from_numpy(self.bars).to(device)
        losses = []
        batch = 8
        for _ in range(epochs):
            order = rng.permutation(len(items))
            total = 0.0
            for start in range(0, len(order), batch):
                rows = order[start:start + batch]
                labelled = set().union(*(labels[r][0] | labels[r][1] for r in rows))
                extra = rng.choice(len(self.vocabulary), size=min(RANDOM_CLASSES, len(self.vocabulary)), replace=False)
                classes = sorted(labelled | set(int(c) for c in extra))
                cls_t = torch.tensor(classes, device=device)
                x = torch.from_numpy(np.stack([feats[items[r].sha256] for r in rows])).to(device)
                y = np.zeros((len(rows), len(classes)), dtype=np.float32)
                w = np.full_like(y, IMPLICIT_NO_WEIGHT)
                col = {c: j for j, c in enumerate(classes)}
                for i, r in enumerate(rows):
                    yes, explicit = labels[r]
                    for c in yes:
                        y[i, col[c]], w[i, col[c]] = 1.0, 1.0
                    for c in explicit:
                        w[i, col[c]] = EXPLICIT_WEIGHT
                y_t, w_t = torch.from_numpy(y).to(device), torch.from_numpy(w).to(device)
                logits = self.subset_logits(student, x, cls_t)
                with torch.no_grad():
                    target = self.subset_logits(teacher, x, cls_t)
                margin = (logits - bars[cls_t]) * (2 * y_t - 1)
                loss = (torch.nn.functional.softplus(-margin) * w_t).sum() / len(rows)
                loss = loss + DISTILL_WEIGHT * ((logits - target) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
            losses.append(total / max(1, len(items)))
        return student.eval(), losses


def torch_einsum(spec, a, b):
    import torch

    return torch.einsum(spec, a.to(b.dtype), b)


def overlay_head(model, state: dict, source: str) -> None:
    """Copy a saved head into ``model``: every key must exist with the same shape, and every head
    parameter of the model must be given (no silent partial loads)."""
    import torch

    own = model.state_dict()
    expected = {k for k in own if k.split(".", 1)[0] in HEAD_MODULES}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    wrong = sorted(k for k in set(state) & expected if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        raise TaggerError(f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                          f"wrong shape {wrong[:5]}")
    with torch.no_grad():
        for k in expected:
            own[k].copy_(state[k].to(own[k].dtype))


def finetuned_ram_tagger(inner, name: str, head_path, version: dict):
    """A RAM pack tagger whose head is replaced by a fine-tuned one (loaded lazily, like the pack)."""
    from phototag.tagging.base import Tagger

    class FinetunedRamTagger(Tagger):
        def __init__(self):
            self.inner = inner
            self.name = name
            self.model_id = inner.model_id
            self.embedding_dim = inner.embedding_dim
            self.batch_size = inner.batch_size
            self.version = version
            self._patched = None

        @property
        def weights_sha256(self) -> str:  # type: ignore[override]
            return version["weights_sha256"]

        def settings(self):
            return {**inner.settings(), "finetuned_head_sha256": version["head_sha256"],
                    "base_weights_sha256": version["base_weights_sha256"]}

        def vocabulary(self):
            return inner.vocabulary()

        def tag_names_zh(self):
            return inner.tag_names_zh()

        def tag_parents(self):
            return inner.tag_parents()

        def prepare(self, image):
            return inner.prepare(image)

        def _ensure(self):
            model = inner.load()
            if self._patched is not model:
                from safetensors.torch import load_file

                overlay_head(model, load_file(str(head_path)), str(head_path))
                self._patched = model

        def predict(self, batch):
            self._ensure()
            return inner.predict(batch)

        def close(self):
            inner.close()
            self._patched = None

    return FinetunedRamTagger()
