"""Learning from corrections: do calibrate and finetune make the tags agree more with the user?

Builds a real library (SQLite file, real photos, the real built-in model): ``--photos`` variants
(random crop, flip, small rotation, colour jitter) of the real photos that ship with scikit-image and
scikit-learn, scanned by the pipeline. Then a simulated user reviews every photo and corrects it by
fixed, consistent rules, through the same library API ``phototag tag add/remove`` uses:

* **R1 — weak guesses are wrong**: the user removes every class tag (tabby cat, espresso …) the model
  gave with a score below ``--r1`` (0.3);
* **R2 — general tags the model is shy about**: the user adds a category tag (animal, food, structure …)
  whenever the model scores it at least ``--r2`` (0.1) but did not give it (its bar is 0.25);
* **R3 — a taste the scores cannot express**: the user removes ``structure`` from every photo that also
  has ``house`` (a rule a per-tag threshold cannot learn; a head might).

Agreement with the user (precision / recall / F1 over all tags of every reviewed photo) is measured on
a held-out 30 % of the photos that neither calibration nor fine-tuning saw, before and after. The
numbers are printed; this is a benchmark, not a timed test.

``--sweep 1,0.1,0`` also trains the head with each of these distillation weights and prints, besides
the held-out agreement, what the head changed on the photos the user did **not** correct (the rules
found nothing to fix, so the model's tags are what the user wants there): the distillation term is
meant to keep those, which held-out agreement on corrected photos cannot see.

    .venv/bin/python bench/bench_learning.py --photos 160 --workdir /tmp/ptlearn

Re-running with the same ``--workdir`` reuses the photos and the scanned library (``--rebuild`` to start over).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def source_images() -> list[tuple[str, Image.Image]]:
    """Real photos that ship inside scikit-image / scikit-learn (no download)."""
    from skimage import data as skdata

    found = []
    for name in ("chelsea", "coffee", "astronaut", "rocket", "camera", "clock", "coins", "horse", "hubble_deep_field",
                 "immunohistochemistry", "moon", "page", "brick", "grass", "gravel", "logo", "text", "colorwheel"):
        try:
            array = getattr(skdata, name)()
        except Exception:  # noqa: BLE001 - a data file that needs a download: skip it
            continue
        img = Image.fromarray(np.asarray(array)).convert("RGB")
        found.append((name, img))
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    for fname, array in zip(data.filenames, data.images):
        found.append((Path(fname).stem, Image.fromarray(array).convert("RGB")))
    return found


def make_variants(folder: Path, count: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    sources = source_images()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name, img = sources[i % len(sources)]
        w, h = img.size
        area = rng.uniform(0.35, 1.0)
        cw, ch = max(32, int(w * area ** 0.5)), max(32, int(h * area ** 0.5))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        v = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            v = ImageOps.mirror(v)
        v = v.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC)
        v = ImageEnhance.Brightness(v).enhance(rng.uniform(0.7, 1.3))
        v = ImageEnhance.Contrast(v).enhance(rng.uniform(0.7, 1.3))
        v = ImageEnhance.Color(v).enhance(rng.uniform(0.6, 1.4))
        v.thumbnail((384, 384))
        v.save(folder / f"{name}-{i:04d}.jpg", quality=90)
    return count


def simulate_user(lib, tagger, r1: float, r2: float) -> dict[str, int]:
    """Apply the rules R1-R3 to every photo; returns how many corrections of each kind were made."""
    from sqlalchemy import select

    from phototag.db.models import Photo, PhotoStatus
    from phototag.learn.corrections import Reviewed, model_outputs

    table = tagger.tags
    class_tags = set(table.class_tags)
    categories = {n for i, n in enumerate(table.vocabulary) if n not in class_tags and table.members[i]}
    index = {n: i for i, n in enumerate(table.vocabulary)}
    with lib.session() as s:
        rows = s.execute(select(Photo.id, Photo.path, Photo.sha256).where(Photo.status == PhotoStatus.ok.value)).all()
    items = [Reviewed(pid, path, sha) for pid, path, sha in rows]
    scores, given = model_outputs(lib.settings, tagger, items)
    counts = {"R1 removed": 0, "R2 added": 0, "R3 removed": 0, "photos": 0}
    with lib.session() as s:
        for it in items:
            if it.sha256 not in scores:
                continue
            photo = s.get(Photo, it.photo_id)
            tags = set(given[it.sha256])
            vec = scores[it.sha256]
            remove = {t for t in tags & class_tags if vec[index[t]] < r1}
            if "house" in tags and "structure" in tags:
                remove.add("structure")
                counts["R3 removed"] += 1
            add = {c for c in categories - tags if vec[index[c]] >= r2}
            counts["R1 removed"] += len({t for t in tags & class_tags if vec[index[t]] < r1})
            counts["R2 added"] += len(add)
            if remove:
                lib.remove_tags(s, photo, sorted(remove))
            if add:
                lib.add_manual_tags(s, photo, sorted(add))
            if remove or add:
                counts["photos"] += 1
    return counts


def distillation_sweep(lib, tagger, weights: list[float], epochs: int, lr: float) -> None:
    """Train the head once per distillation weight (the steps of ``finetune``, without writing a version)."""
    from sqlalchemy import select

    from phototag.db.models import Photo, PhotoStatus
    from phototag.learn.corrections import Reviewed, load_reviewed, split_held_out
    from phototag.learn.finetune import agreement, cached_features, trainable_head, training_device

    head = trainable_head(tagger)
    device = training_device(lib.settings.get("device"))
    with lib.session() as s:
        reviewed = load_reviewed(s)
        rows = s.execute(select(Photo.id, Photo.path, Photo.sha256).where(Photo.status == PhotoStatus.ok.value)).all()
    seen = {it.photo_id for it in reviewed}
    uncorrected = [Reviewed(pid, path, sha) for pid, path, sha in rows if pid not in seen and sha]
    feats = cached_features(lib.settings, head, reviewed + uncorrected, device)
    reviewed = [it for it in reviewed if it.sha256 in feats]
    uncorrected = [it for it in uncorrected if it.sha256 in feats]
    initial = head.initial(device)
    for it, given in zip(uncorrected, head.given(initial, np.stack([feats[it.sha256] for it in uncorrected]), device)):
        it.yes = given  # the user let the model's tags stand
    train, held = split_held_out(reviewed, 0.3)
    print(f"\ndistillation sweep: trained on {len(train)} corrected photos; held-out: {len(held)} corrected photos; "
          f"uncorrected: {len(uncorrected)} photos whose model tags the user kept")
    print(f"  {'weight':>7}  {'held-out P':>10} {'R':>6} {'F1':>6}   {'uncorrected: tags changed':>26} {'kept':>6}")
    for weight in weights:
        t0 = time.perf_counter()
        params, _ = head.train(train, feats, epochs, device, lr, weight)
        a = agreement(head, params, held, feats, device)
        u = agreement(head, params, uncorrected, feats, device)
        changed = u.false_positive + u.false_negative
        print(f"  {weight:>7g}  {a.precision:>10.3f} {a.recall:>6.3f} {a.f1:>6.3f}   "
              f"{changed:>12} ({changed / max(1, u.photos):.2f}/photo) {u.recall:>6.3f}   ({time.perf_counter() - t0:.0f}s)")


def row(label: str, a) -> str:
    return f"  {label:<28} precision {a.precision:.3f}   recall {a.recall:.3f}   F1 {a.f1:.3f}   (photos {a.photos})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=160)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ptlearn"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--r1", type=float, default=0.3)
    parser.add_argument("--r2", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--distill", type=float, default=None,
                        help="weight of the distillation term (default: phototag's, learn.head.DISTILL_WEIGHT)")
    parser.add_argument("--sweep", type=lambda v: [float(x) for x in v.split(",")], default=None,
                        help="comma-separated distillation weights to compare (see above)")
    args = parser.parse_args()

    from phototag.config import load_settings, use_settings
    from phototag.learn.calibrate import calibrate
    from phototag.learn.finetune import finetune
    from phototag.learn.head import DISTILL_WEIGHT
    from phototag.library import Library
    from phototag.pipeline import Pipeline
    from phototag.tagging.builtin import BuiltinTagger

    if args.rebuild and args.workdir.exists():
        shutil.rmtree(args.workdir)
    photos, home = args.workdir / "photos", args.workdir / "home"
    settings = load_settings(home, environ={})
    use_settings(settings)
    tagger = BuiltinTagger(faces=False)
    fresh = not (home / "phototag.db").exists()
    lib = Library(settings)
    t0 = time.perf_counter()
    if fresh:
        if not photos.exists():
            make_variants(photos, args.photos)
        report = Pipeline(lib, tagger).scan([photos])
        print(f"scanned {report.new} photos in {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        counts = simulate_user(lib, tagger, args.r1, args.r2)
        print(f"simulated user ({time.perf_counter() - t0:.0f}s): {counts}")
    else:
        print("reusing the library in", home)

    t0 = time.perf_counter()
    cal = calibrate(lib, tagger=tagger, min_corrections=3)
    print(f"\ncalibrate ({time.perf_counter() - t0:.1f}s): {len(cal.tuned)} tags tuned on {cal.train_photos} photos; "
          f"agreement on {cal.held_out_photos} held-out photos, all tags:")
    print(row("before (model as shipped)", cal.before))
    print(row("after calibrate", cal.after))

    t0 = time.perf_counter()
    distill = DISTILL_WEIGHT if args.distill is None else args.distill
    ft = finetune(lib, tagger=tagger, epochs=args.epochs, lr=args.lr, distill=distill, write=False)
    print(f"\nfinetune ({time.perf_counter() - t0:.1f}s on {ft.device}, {ft.epochs} epochs, distillation weight "
          f"{distill}, loss "
          f"{ft.losses[0]:.3f} → {ft.losses[-1]:.3f}): agreement on {ft.held_out_photos} held-out photos, "
          "tags with classes (faces excluded):")
    print(row("before (model as shipped)", ft.before))
    print(row("after finetune", ft.after))
    if args.sweep:
        distillation_sweep(lib, tagger, args.sweep, args.epochs, args.lr)
    lib.close()


if __name__ == "__main__":
    main()
