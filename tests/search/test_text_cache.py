"""The vocabulary's vectors on disk: reused across processes, extended by what is new, invalidated
by another model, rebuilt when the file is broken, always replaced atomically."""

from __future__ import annotations

import numpy as np

from phototag.search.text_cache import VocabularyCache


def test_vocabulary_vectors_are_cached_by_model_and_texts(tmp_path, counting_encoder):
    enc = counting_encoder()
    folder = tmp_path / "cache"
    first = VocabularyCache(folder, enc).vectors(["dog", "cat", "espresso"])
    assert enc.encoded == ["dog", "cat", "espresso"]
    enc.encoded.clear()
    again = VocabularyCache(folder, enc)  # a new process: from the file, nothing embedded
    assert np.allclose(again.vectors(["dog", "cat", "espresso"]), first, atol=1e-3) and enc.encoded == []
    assert again.rebuilds == 0
    # a new tag: only its text is embedded; the file is rewritten (atomically: no temp file left)
    again.vectors(["dog", "cat", "espresso", "beach"])
    assert enc.encoded == ["beach"] and again.rebuilds == 1
    assert [p.name for p in folder.iterdir()] == [again.path.name]
    # another model (here: the same one installed elsewhere) invalidates every row
    import shutil

    other_dir = tmp_path / "model-copy"
    shutil.copytree(enc.model_dir, other_dir, copy_function=shutil.copy)  # a new weights file
    other = counting_encoder()
    other._model_dir = other_dir
    VocabularyCache(folder, other).vectors(["dog", "cat", "espresso", "beach"])
    assert sorted(other.encoded) == ["beach", "cat", "dog", "espresso"]


def test_a_broken_vocabulary_file_is_rebuilt(tmp_path, counting_encoder):
    enc = counting_encoder()
    cache = VocabularyCache(tmp_path, enc)
    cache.path.write_bytes(b"not a zip file")
    assert cache.vectors(["dog"]).shape == (1, 384) and enc.encoded == ["dog"]
