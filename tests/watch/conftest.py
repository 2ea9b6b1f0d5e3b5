from __future__ import annotations

import pytest

from watch.helpers import ColourTagger


@pytest.fixture
def tagger():
    return ColourTagger()


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "Pictures"
    r.mkdir()
    return r
