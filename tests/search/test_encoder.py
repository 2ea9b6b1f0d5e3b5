"""The numpy sentence model of plain-language search: the same vectors as sentence-transformers,
loaded offline, and a clear error when it is missing."""

from __future__ import annotations

import os

import numpy as np
import pytest

from phototag.search.encoder import TextEncoder
from phototag.search.errors import TextModelUnavailable
from phototag.search.text import TextSearcher


def test_numpy_minilm_equals_sentence_transformers(encoder):
    st = pytest.importorskip("sentence_transformers")
    texts = ["a cup of coffee", "猫", "Puppy!", "espresso: strong black coffee brewed by forcing hot water " * 20]
    reference = st.SentenceTransformer(str(encoder.model_dir), device="cpu").encode(
        texts, normalize_embeddings=True, show_progress_bar=False
    )
    ours = encoder.encode(texts)
    assert np.abs(ours - reference).max() < 1e-4  # the same arithmetic, float32 round-off apart


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch, engine, home):
    with pytest.raises(TextModelUnavailable, match="never downloads"):
        TextEncoder(model_dir=tmp_path / "nowhere").encode(["dog"])
    monkeypatch.setenv("PHOTOTAG_TEXT_MODEL", str(tmp_path / "empty"))
    with pytest.raises(TextModelUnavailable, match="PHOTOTAG_TEXT_MODEL"):
        TextSearcher(home, engine).search("dog")


def test_model_loads_offline_without_network_variables_leaking(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    enc = TextEncoder()
    vec = enc.encode(["a dog"])
    assert vec.shape == (1, 384) and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-4)
    assert "HF_HUB_OFFLINE" not in os.environ
