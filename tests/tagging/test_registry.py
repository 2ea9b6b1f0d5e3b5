"""The registry is the one resolver of model names: plugin taggers and fine-tuned versions are listed
and loaded like the built-in model, with the user's thresholds applied to any of them."""

from __future__ import annotations

import numpy as np
import pytest

from phototag import plugins
from phototag.hookspecs import hookimpl
from phototag.learn.calibrate import write_user_thresholds
from phototag.tagging.base import Prediction, Tagger, TaggerError, TagScore
from phototag.tagging.registry import get_tagger, list_taggers
from phototag.tagging.versions import ThresholdedTagger


class TwoTags(Tagger):
    """Two tags from the mean brightness."""

    name = "twotags"
    model_id = "test/twotags"

    @property
    def weights_sha256(self) -> str:
        return "2" * 64

    def vocabulary(self):
        return ["bright", "dark"]

    def prepare(self, image):
        return float(np.asarray(image.convert("L")).mean()) / 255

    def predict(self, batch):
        return [Prediction([TagScore("bright", b)] if b >= 0.5 else [TagScore("dark", 1 - b)],
                           scores=np.array([b, 1 - b], dtype=np.float32)) for b in batch]


class Plugin:
    @staticmethod
    @hookimpl
    def register_taggers(settings):
        return [TwoTags()]


@pytest.fixture
def plugin_tagger(home):
    plugins.register_plugin(Plugin, "registry-test")
    yield home
    plugins.unregister_plugin("registry-test")


def test_a_plugin_tagger_is_listed_and_loaded_with_the_users_thresholds(plugin_tagger):
    from PIL import Image

    settings = plugin_tagger
    infos = {i.name: i for i in list_taggers(settings)}
    assert infos["twotags"].kind == "plugin" and infos["twotags"].model_id == "test/twotags"
    assert infos["builtin"].kind == "builtin"
    assert isinstance(get_tagger(settings, "twotags"), TwoTags)

    grey = Image.new("RGB", (8, 8), (140, 140, 140))  # brightness 0.55: "bright" at 0.55
    write_user_thresholds(settings, "twotags", {"bright": 0.6}, {})
    tagger = get_tagger(settings, "twotags")
    assert isinstance(tagger, ThresholdedTagger) and tagger.name == "twotags"
    assert tagger.predict([tagger.prepare(grey)])[0].tags == []  # 0.55 < the user's 0.6
    bare = get_tagger(settings, "twotags", user_thresholds=False)
    assert [t.name for t in bare.predict([bare.prepare(grey)])[0].tags] == ["bright"]


def test_an_unknown_name_lists_the_known_ones(plugin_tagger):
    with pytest.raises(TaggerError, match="unknown model 'nosuch'; known: builtin, twotags"):
        get_tagger(plugin_tagger, "nosuch")
