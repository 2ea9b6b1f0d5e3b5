"""Fit the built-in model's per-tag thresholds on real photos; write phototag/tagging/data/builtin_thresholds.json.

Dev-time only (the JSON it writes is committed; docs/builtin-model.md reports a run). The measurement is
``bench/bench_learning.py``'s: variants (random crop, flip, small rotation, colour jitter) of the real photos
that ship with scikit-image and scikit-learn (its ``make_variants``, imported), tagged by the real built-in
model. What each source photo truly shows is written down by hand in :data:`TRUTH` (from looking at it): a
candidate tag (a top-5 class with probability ≥ 0.05, or a category/face tag with score ≥ 0.1) is right when
it is in its photo's set, wrong otherwise. Source photos that show nothing ImageNet names (the Hubble deep
field, a moon, bricks, text …) have an empty set: every tag on them is wrong.

Variants are split by number: 70 % fit the thresholds, 30 % (never seen by the fit) measure them.

1. one threshold for class tags and one for category tags, each the value on a 0.05 grid with the best F1
   over the fitting variants;
2. then per tag, for a tag with at least 3 candidates in the fitting variants: the threshold (grid, at or above
   the group's, at most 0.5) with the fewest errors on that tag, kept only when it makes fewer errors than
   the group's.

Usage: python tools/fit_builtin_thresholds.py [--variants 360] [--workdir /tmp/ptthresholds] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "phototag" / "tagging" / "data" / "builtin_thresholds.json"
sys.path[:0] = [str(REPO), str(REPO / "bench")]

CATS = {"tabby cat", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "cat", "mammal", "animal"}
#: source photo → every tag of the built-in vocabulary that is right for it (looked at by a person)
TRUTH: dict[str, set[str]] = {
    "chelsea": CATS,
    "coffee": {"espresso", "cup", "coffee mug", "drink", "food", "container"},
    "astronaut": {"person", "portrait", "space shuttle", "aircraft", "vehicle"},
    "rocket": {"missile", "projectile", "space shuttle"},
    "camera": {"person", "tripod", "reflex camera", "Polaroid camera", "electronics"},
    "clock": {"wall clock", "analog clock", "timepiece"},
    "coins": set(),
    "horse": {"horse", "sorrel", "mammal", "animal"},
    "hubble_deep_field": set(),
    "immunohistochemistry": set(),
    "moon": set(),
    "page": set(),
    "brick": set(),
    "grass": set(),
    "gravel": set(),
    "logo": set(),
    "text": set(),
    "colorwheel": set(),
    "china": {"palace", "stupa", "monastery", "structure", "building", "house", "place of worship", "lakeside",
              "boathouse", "pagoda", "dome", "bell cote"},
    "flower": {"daisy", "flower", "plant", "bee", "insect", "animal"},
}
#: a per-tag bar stays at or under this: a wrong tag scored higher is a confusion to fix in the vocabulary
#: (or by the user's corrections, ``phototag calibrate``), not to hide with a threshold fitted on a few photos
MAX_TAG_THRESHOLD = 0.5
GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def measure(workdir: Path, variants: int, seed: int):
    """(source, variant number, tag, score, is class tag) of every candidate tag."""
    from bench_learning import make_variants
    from PIL import Image

    from phototag.tagging.builtin import BuiltinTagger

    folder = workdir / "photos"
    if len(list(folder.glob("*.jpg"))) != variants:
        for old in folder.glob("*.jpg"):
            old.unlink()
        make_variants(folder, variants, seed)
    tagger = BuiltinTagger(thresholds=False)
    table = tagger.tags
    n_classes = len(table.class_tags)
    rows = []
    files = sorted(folder.glob("*.jpg"))
    for start in range(0, len(files), 16):
        batch = files[start : start + 16]
        prepared = [tagger.prepare(Image.open(f).convert("RGB")) for f in batch]
        for path, prediction in zip(batch, tagger.predict(prepared)):
            source, number = path.stem.rsplit("-", 1)
            scores = prediction.scores
            top = np.argsort(-scores[:n_classes], kind="stable")[: tagger.top_k]
            for i in top:
                if scores[i] >= 0.05:
                    rows.append((source, int(number), table.class_tags[i], float(scores[i]), True))
            for i in range(n_classes, len(table.vocabulary)):
                if scores[i] >= 0.1:
                    rows.append((source, int(number), table.vocabulary[i], float(scores[i]), False))
    return rows


def agreement(rows, thresholds, group) -> tuple[float, float, float, int, int]:
    """precision, recall, F1, wrong tags given, right tags missed — over every candidate and every true tag."""
    given_right = given_wrong = 0
    found: set[tuple[str, int, str]] = set()
    photos = {(r[0], r[1]) for r in rows}
    for source, number, tag, score, is_class in rows:
        if score >= thresholds.get(tag, group[is_class]):
            if tag in TRUTH.get(source, set()):
                given_right += 1
                found.add((source, number, tag))
            else:
                given_wrong += 1
    seen: dict[tuple[str, int], set[str]] = {}
    for s, n, tag, _score, _c in rows:
        seen.setdefault((s, n), set()).add(tag)
    # recall is over the true tags that were candidates of each photo
    truth_total = sum(len(TRUTH.get(s, set()) & seen[(s, n)]) for s, n in photos)
    precision = given_right / max(1, given_right + given_wrong)
    recall = given_right / max(1, truth_total)
    f1 = 2 * precision * recall / max(1e-9, precision + recall)
    return precision, recall, f1, given_wrong, truth_total - given_right


def fit(rows) -> tuple[dict[bool, float], dict[str, float]]:
    group: dict[bool, float] = {}
    for is_class in (True, False):
        part = [r for r in rows if r[4] == is_class]
        best = max(GRID, key=lambda t: (agreement(part, {}, {is_class: t})[2], -t))
        group[is_class] = float(best)
    per_tag: dict[str, float] = {}
    for tag in sorted({r[2] for r in rows}):
        part = [r for r in rows if r[2] == tag]
        if len(part) < 3:
            continue
        is_class = part[0][4]

        def errors(t: float) -> int:
            return sum((r[3] >= t) != (tag in TRUTH.get(r[0], set())) for r in part)

        base = group[is_class]
        best = min((t for t in GRID if base <= t <= MAX_TAG_THRESHOLD), key=lambda t: (errors(t), t))
        if errors(best) < errors(base):
            per_tag[tag] = float(best)
    return group, per_tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", type=int, default=360)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ptthresholds")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    rows = measure(args.workdir, args.variants, args.seed)
    train = [r for r in rows if r[1] % 10 < 7]
    held_out = [r for r in rows if r[1] % 10 >= 7]
    group, per_tag = fit(train)
    today = {True: 0.1, False: 0.25}  # BuiltinTagger's min_score / category_min_score before this fit
    print(f"{len({(r[0], r[1]) for r in rows})} photos, {len(rows)} candidate tags; "
          f"fit on {len({(r[0], r[1]) for r in train})}, measured on {len({(r[0], r[1]) for r in held_out})}")
    print(f"group thresholds: class {group[True]:.2f}, category {group[False]:.2f}; {len(per_tag)} per-tag")
    for tag, t in sorted(per_tag.items()):
        print(f"  {tag}: {t:.2f}")
    for label, th, gr in (("before (0.10 / 0.25)", {}, today), ("groups only", {}, group), ("per tag", per_tag, group)):
        p, r, f1, wrong, missed = agreement(held_out, th, gr)
        print(f"held out, {label:22s} precision {p:.3f}  recall {r:.3f}  F1 {f1:.3f}  wrong {wrong}  missed {missed}")
    data = {
        "format": 1,
        "source": "tools/fit_builtin_thresholds.py on variants of scikit-image/scikit-learn photos; "
        "see docs/builtin-model.md",
        "class_threshold": group[True],
        "category_threshold": group[False],
        "tags": per_tag,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=".builtin_thresholds.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
