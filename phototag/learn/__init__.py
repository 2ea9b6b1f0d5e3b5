"""Learning from the user's corrections: per-tag threshold calibration and tagging-head fine-tuning.

* :mod:`phototag.learn.corrections` — what the user said (removals, manual adds) as labels, and the
  model's scores for the corrected photos (re-computed by running the model, cached in the home);
* :mod:`phototag.learn.calibrate` — per-tag thresholds → ``<home>/models/<name>/thresholds.user.json``;
* :mod:`phototag.learn.finetune` — a new tagging head on cached backbone features → a new model version;
* :mod:`phototag.learn.versions` — loading a model by name with those applied.
"""
