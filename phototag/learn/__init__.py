"""Learning from the user's corrections: per-tag threshold calibration and tagging-head fine-tuning.

* :mod:`phototag.learn.corrections` — what the user said (removals, manual adds) as labels, and the
  model's scores for the corrected photos (re-computed by running the model, cached in the home);
* :mod:`phototag.learn.calibrate` — per-tag thresholds → ``<home>/models/<name>/thresholds.user.json``;
* :mod:`phototag.learn.finetune` — a new tagging head on cached backbone features → a new model
  version; the model-specific part is a :class:`~phototag.learn.head.TrainableHead`
  (:mod:`~phototag.learn.builtin_head`, :mod:`~phototag.learn.ram_head`).

Learning writes these files; tagging reads them (:mod:`phototag.tagging.versions`), and the registry
(:func:`phototag.tagging.registry.get_tagger`) is what turns a model name into a tagger with them
applied. Nothing in :mod:`phototag.tagging` imports this package.
"""
