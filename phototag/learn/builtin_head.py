"""Fine-tuning the built-in model (EfficientNet-Lite0): its classifier is the tagging head.

The backbone is frozen; the features are its 1280-d pooled features. The head is the classifier
layer (1280 → 1000). A vocabulary tag's score is what the built-in tagger computes: the softmax
probability of its class, or for a category (cat, food …) the sum over its classes — so the loss is
taken on exactly the scores the tagger thresholds, at the bar each tag must clear (a class's
``min_score``, a category's ``category_min_score``): a logistic loss on ``(score − bar) / 0.05``
signed by the user's answer, plus the distillation term KL(original head's softmax ‖ new). Plain
cross-entropy on the scores was tried first and barely moved precision: a class at 0.15 is *given*
(its bar is 0.1) but costs little under cross-entropy.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from phototag.learn.corrections import Reviewed
from phototag.learn.head import EXPLICIT_WEIGHT, IMPLICIT_NO_WEIGHT, TrainableHead, answers, targets
from phototag.tagging.builtin import BuiltinTagger, Faces, load_efficientnet
from phototag.tagging.versions import FinetunedBuiltinTagger

MARGIN_SCALE = 0.05  #: score distance from a tag's bar at which the loss is ~e^-1 of its value at the bar


class BuiltinHead(TrainableHead):
    """Features, scores and tag selection of the built-in model, for a given classifier ``(weight, bias)``."""

    feature_batch = 32

    def __init__(self, tagger: BuiltinTagger):
        self.tagger = tagger
        table = tagger.tags
        self.vocabulary = list(table.vocabulary)
        self.trainable = [i for i, m in enumerate(table.members) if m]  # tags with classes (not faces)
        self.universe = {self.vocabulary[i] for i in self.trainable}
        members = np.zeros((len(table.class_tags), len(self.trainable)), dtype=np.float32)
        for j, i in enumerate(self.trainable):
            members[list(table.members[i]), j] = 1.0
        self.members = members
        # the score a tag needs to be given: a class's min_score, a category's category_min_score
        n_classes = len(table.class_tags)
        self.bars = np.array([tagger.min_score if i < n_classes else tagger.category_min_score
                              for i in self.trainable], dtype=np.float32)
        self.cache_name = f"builtin-{self.base_weights_sha256[:16]}"

    @property
    def base_weights_sha256(self) -> str:
        """sha256 of the backbone weights file (of a fine-tuned version too: the head is not in it)."""
        if isinstance(self.tagger, FinetunedBuiltinTagger):
            return self.tagger.base_weights_sha256
        return self.tagger.weights_sha256

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        fc = self.tagger.network().get_classifier()
        return fc.weight.detach().float().cpu().numpy(), fc.bias.detach().float().cpu().numpy()

    def embedder(self, device: str):
        import torch

        from phototag.tagging.models.efficientnet import logits_and_features

        plain = BuiltinTagger(faces=False, weights=self.tagger.weights_path)  # prepare without face detection
        model = load_efficientnet(self.tagger.weights_path).to(device)

        def embed(prepared: list) -> np.ndarray:
            pixels = torch.stack([p.pixels for p in prepared]).to(device)
            with torch.inference_mode():
                _, pooled = logits_and_features(model, pixels)
            return pooled.float().cpu().numpy()

        return plain.prepare, embed

    def initial(self, device: str) -> tuple[np.ndarray, np.ndarray]:
        return self.classifier()

    def given(self, params: tuple[np.ndarray, np.ndarray], features: np.ndarray, device: str) -> list[set[str]]:
        """The (non-face) tags the built-in tagger gives with the classifier ``params``."""
        weight, bias = params
        logits = features @ weight.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        dummy = np.zeros(features.shape[1], dtype=np.float32)
        return [{t.name for t in self.tagger.prediction(p.astype(np.float32), dummy, Faces()).tags} for p in probs]

    def train(self, items: Sequence[Reviewed], feats: Mapping[str, np.ndarray], epochs: int, device: str,
              lr: float, distill: float, seed: int = 0):
        column = {self.vocabulary[i]: j for j, i in enumerate(self.trainable)}
        y, w = targets(answers(items, column), range(len(self.trainable)))
        weight, bias, losses = train_classifier(self, np.stack([feats[it.sha256] for it in items]), y, w, epochs,
                                                device, lr=lr, seed=seed, distill=distill)
        return (weight, bias), losses

    def head_state(self, params: tuple[np.ndarray, np.ndarray]) -> dict:
        import torch

        weight, bias = params
        return {"weight": torch.from_numpy(np.ascontiguousarray(weight)),
                "bias": torch.from_numpy(np.ascontiguousarray(bias))}

    def version_record(self) -> dict[str, Any]:
        return {"base": "builtin", "settings": self.tagger.settings(),
                "training": {"loss": "logistic at the tag's bar", "margin_scale": MARGIN_SCALE,
                             "explicit_weight": EXPLICIT_WEIGHT, "implicit_no_weight": IMPLICIT_NO_WEIGHT}}


def train_classifier(
    head: BuiltinHead, features: np.ndarray, labels: np.ndarray, weights: np.ndarray, epochs: int, device: str,
    *, lr: float, seed: int, distill: float,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """A new classifier ``(weight, bias)`` from the current one, and the loss of each epoch."""
    import torch

    torch.manual_seed(seed)
    w0, b0 = head.classifier()
    x = torch.from_numpy(features).to(device)
    y = torch.from_numpy(labels).to(device)
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
            loss = bce + distill * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    return fc.weight.detach().cpu().numpy(), fc.bias.detach().cpu().numpy(), losses
