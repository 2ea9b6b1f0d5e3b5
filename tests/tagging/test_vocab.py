"""Tag lists, thresholds and the official selection rule (strict >, Tag2Text's special classes)."""

from __future__ import annotations

import numpy as np
import pytest

from phototag.tagging.vocab import (
    Vocabulary,
    VocabularyError,
    ram_vocabulary,
    tag2text_vocabulary,
    unique_names,
    vocabulary_for,
)

from .ram_cases import RAM_DATA

DATA = RAM_DATA / "ram" / "data"


@pytest.fixture(scope="module")
def ram():
    return ram_vocabulary(DATA / "ram_tag_list.txt", DATA / "ram_tag_list_threshold.txt", DATA / "ram_tag_list_chinese.txt")


def test_official_ram_lists(ram):
    assert len(ram) == 4585 and ram.names[0] == "3D CG rendering" and ram.names[-1] == "zoo"
    assert ram.names_zh[0] == "三维CG渲染"  # trailing space of the file stripped
    assert all(n == n.strip() for n in ram.names_zh)
    count = {v: int((ram.thresholds == np.float32(v)).sum()) for v in (0.65, 0.8, 0.9)}
    assert count == {0.65: 3414, 0.8: 735, 0.9: 119}
    assert ram.deleted == frozenset()


def test_selection_is_strictly_greater_than_the_threshold(ram):
    scores = np.zeros(len(ram), dtype=np.float32)
    scores[0] = np.float32(0.65)  # equal: not given
    scores[1] = np.nextafter(np.float32(0.65), np.float32(1))  # just above: given
    assert ram.selected(scores).tolist() == [1]


def test_user_threshold_replaces_every_class_threshold(ram):
    scores = np.full(len(ram), 0.7, dtype=np.float32)
    assert len(ram.selected(scores)) == int((ram.thresholds < np.float32(0.7)).sum()) > 3414
    assert len(ram.with_threshold(0.6).selected(scores)) == len(ram)
    assert len(ram.with_threshold(0.7).selected(scores)) == 0
    assert ram.with_threshold(None).selected(scores).tolist() == ram.selected(scores).tolist()
    with pytest.raises(VocabularyError):
        ram.with_threshold(1.5)


def test_tag2text_defaults_and_deleted_classes():
    v = tag2text_vocabulary(DATA / "tag2text_ori_tag_list.txt")
    assert len(v) == 3429
    assert v.names[2701] == "person" and v.thresholds[2701] == np.float32(0.7)
    assert v.thresholds[0] == np.float32(0.68)
    assert v.deleted == {127, 2961, 3351, 3265, 3338, 3355, 3359}
    scores = np.full(3429, 0.69, dtype=np.float32)
    picked = set(v.selected(scores).tolist())
    assert 2701 not in picked and 127 not in picked and 0 in picked
    assert len(picked) == 3429 - 3 - 7
    assert len(unique_names(v.names)) == 3429 - 116  # the list repeats names (noun/verb)


def test_mismatched_files_are_refused(tmp_path):
    tags = tmp_path / "tags.txt"
    tags.write_text("cat\ndog\n", encoding="utf-8")
    th = tmp_path / "th.txt"
    th.write_text("0.5\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="1 values for 2 tags"):
        ram_vocabulary(tags, th)
    th.write_text("0.5\nhigh\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="line 2"):
        ram_vocabulary(tags, th)
    zh = tmp_path / "zh.txt"
    zh.write_text("猫\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="1 names for 2 tags"):
        ram_vocabulary(tags, None, zh)
    with pytest.raises(VocabularyError, match="2 names but the checkpoint has 4585 classes"):
        vocabulary_for("ram", tags).check_classes(4585)
    with pytest.raises(VocabularyError, match="does not exist"):
        ram_vocabulary(tmp_path / "nope.txt")
    blank = tmp_path / "blank.txt"
    blank.write_text("cat\n\ndog\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="empty name on line"):
        ram_vocabulary(blank)
    with pytest.raises(VocabularyError):
        Vocabulary(("a", "b"), np.zeros(3, dtype=np.float32))
