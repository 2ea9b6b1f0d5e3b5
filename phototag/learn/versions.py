"""Moved: a model is loaded by name with :func:`phototag.tagging.registry.get_tagger`, and the
user's thresholds and fine-tuned versions are read by :mod:`phototag.tagging.versions`.

``load_model`` is kept only for the importers outside the learning package that still use it
(``phototag/retag.py``, ``phototag/ingest/watch.py``, ``tests/watch/test_background_retag.py``);
remove this module once they import ``get_tagger`` from the registry.
"""

from __future__ import annotations

from phototag.tagging.registry import get_tagger as load_model

__all__ = ["load_model"]
