"""The plugin contract stays documented: every hook has a docstring and a section in
docs/plugins.md, every documented hook exists, every bundled plugin's setting is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from phototag import hookspecs

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DOC = REPO / "docs" / "plugins.md"
DIGIKAM_DOC = REPO / "docs" / "digikam.md"


def hook_names() -> list[str]:
    marker = f"{hookspecs.PROJECT}_spec"
    return sorted(name for name, obj in vars(hookspecs).items()
                  if inspect.isfunction(obj) and hasattr(obj, marker))


def documented_hooks() -> list[str]:
    text = PLUGINS_DOC.read_text(encoding="utf-8")
    hooks_part = text.split("\n## Hooks\n", 1)[1]
    return re.findall(r"^### `(\w+)\(", hooks_part, re.M)


def test_there_are_hooks():
    assert {"register_exporters", "register_taggers", "register_query_fields", "adjust_tags",
            "photos_tagged"} <= set(hook_names())


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_has_a_docstring(name):
    doc = inspect.getdoc(getattr(hookspecs, name))
    assert doc and len(doc.split()) >= 10, f"hookspec {name} needs a real docstring"


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_documented_with_its_arguments(name):
    sections = dict(re.findall(r"^### `(\w+)\(([^)]*)\)`", PLUGINS_DOC.read_text(encoding="utf-8"), re.M))
    assert name in sections, f"docs/plugins.md has no '### `{name}(…)`' section"
    spec_args = list(inspect.signature(getattr(hookspecs, name)).parameters)
    doc_args = [a.strip() for a in sections[name].split(",") if a.strip()]
    assert doc_args == spec_args, f"docs/plugins.md shows {name}({', '.join(doc_args)})"


def test_no_documented_hook_is_stale():
    assert sorted(documented_hooks()) == hook_names()


def _settings_table(text: str, heading: str) -> set[str]:
    part = text.split(heading, 1)[1]
    part = part.split("\n### ", 1)[0].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", part, re.M))


def test_every_bundled_plugin_setting_is_documented():
    from phototag_plugins import digikam, xmp

    text = PLUGINS_DOC.read_text(encoding="utf-8")
    assert _settings_table(text, "### `xmp`") == set(xmp.DEFAULTS)
    assert _settings_table(text, "### `digikam`") == set(digikam.DEFAULTS)
    for key in xmp.DEFAULTS:
        assert f"``{key}``" in xmp.__doc__, f"phototag_plugins.xmp docstring misses {key}"
    for key in digikam.DEFAULTS:
        assert f"``{key}``" in digikam.__doc__, f"phototag_plugins.digikam docstring misses {key}"


def test_digikam_doc_names_the_settings_users_must_change():
    text = " ".join(DIGIKAM_DOC.read_text(encoding="utf-8").split())
    assert "Read from sidecar files" in text and "Use XMP Sidecar For Reading" in text
    assert "[plugins.digikam]" in text and "digiKam is closed" in text.replace("**", "")
