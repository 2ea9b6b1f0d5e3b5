"""Fine-tuning the tagging head of a RAM / RAM++ pack on the user's corrections.

Frozen: the Swin backbone, ``image_proj`` and the label embeddings. Cached in the home: the
``image_proj`` tokens of each reviewed photo (``[1 + tokens, 512]``, float16). Trained: the
cross-attention ``tagging_head``, ``wordvec_proj`` and ``fc``.

The tagging head has no self-attention between label queries, so each class's logit depends only
on its own query: a training step evaluates just the classes the batch has labels for plus a few
random others, which makes a step about ``4585 / k`` times cheaper than a full forward and lets a
CPU train on a few thousand photos. The loss is the logistic loss at each class's own threshold
(``logit − logit(threshold)``, signed by the user's answer) plus the distillation term (squared
logit change on the same classes) toward the original head.

Tag2Text (group-wise ``fc``, no ``wordvec_proj``) is not supported.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np

from phototag.learn.corrections import LearnError, Reviewed
from phototag.learn.head import TrainableHead, answers, targets
from phototag.tagging.versions import RAM_HEAD_MODULES

RANDOM_CLASSES = 32


class RamHead(TrainableHead):
    """The cross-attention tagging head of a RAM / RAM++ pack tagger; ``params`` is a :meth:`head_view`."""

    feature_dtype = np.float16

    def __init__(self, tagger):
        from phototag.tagging.models.ram import RAM

        self.tagger = tagger
        self.model = tagger.load()
        if not isinstance(self.model, RAM):  # RAMPlus is a RAM
            raise LearnError(f"fine-tuning supports RAM and RAM++ packs, not {tagger.kind}")
        self.vocabulary = list(tagger.vocabulary())
        self.universe = set(self.vocabulary)
        self.cache_name = f"{tagger.kind}-{tagger.weights_sha256[:16]}"
        thresholds = np.clip(np.asarray(tagger.vocab.effective_thresholds, dtype=np.float64), 1e-4, 1 - 1e-4)
        self.bars = np.log(thresholds / (1 - thresholds)).astype(np.float32)  # logit of each threshold

    @property
    def base_weights_sha256(self) -> str:
        return self.tagger.weights_sha256

    # ---- features -------------------------------------------------------------------------------
    def embedder(self, device: str):
        """The ``image_proj`` tokens of each photo (on the pack's own device)."""
        import torch

        model = self.model

        def embed(prepared: list) -> np.ndarray:
            x = torch.stack([torch.as_tensor(p) for p in prepared]).to(next(model.parameters()).device)
            with torch.inference_mode():
                return model.image_embeds(x.to(next(model.parameters()).dtype)).float().cpu().numpy()

        return self.tagger.prepare, embed

    # ---- the head on a subset of classes ----------------------------------------------------------
    def head_view(self, device: str):
        """A copy of just the head (trainable modules copied, frozen label embeddings shared, float32):
        the backbone is not copied, so training a full-size RAM++ needs little memory."""
        import torch

        from phototag.tagging.models.ram import RAMPlus

        view = torch.nn.Module()
        for name in RAM_HEAD_MODULES:
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
                if k.split(".", 1)[0] in RAM_HEAD_MODULES}

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

    def initial(self, device: str):
        return self.head_view(device)

    def version_record(self) -> dict[str, Any]:
        return {"base": "pack", "base_pack": self.tagger.name, "kind": self.tagger.kind}

    # ---- training -------------------------------------------------------------------------------
    def train(self, items: Sequence[Reviewed], feats: Mapping[str, np.ndarray], epochs: int, device: str, lr: float,
              distill: float, seed: int = 0):
        """A trained copy of the head (see :meth:`head_view`) and the loss per epoch."""
        import torch

        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        student = self.head_view(device)
        teacher = self.head_view(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        params = list(student.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        labels = answers(items, {n: i for i, n in enumerate(self.vocabulary)})
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
                y, w = targets([labels[r] for r in rows], classes)
                y_t, w_t = torch.from_numpy(y).to(device), torch.from_numpy(w).to(device)
                logits = self.subset_logits(student, x, cls_t)
                with torch.no_grad():
                    target = self.subset_logits(teacher, x, cls_t)
                margin = (logits - bars[cls_t]) * (2 * y_t - 1)
                loss = (torch.nn.functional.softplus(-margin) * w_t).sum() / len(rows)
                loss = loss + distill * ((logits - target) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
            losses.append(total / max(1, len(items)))
        return student.eval(), losses


def torch_einsum(spec, a, b):
    import torch

    return torch.einsum(spec, a.to(b.dtype), b)
