"""docs/query.md stays true: every field and sort key is documented, every example parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from phototag.query import QueryError, field_specs, parse
from phototag.query.fields import sort_names

from .conftest import NOW

DOC = Path(__file__).resolve().parents[2] / "docs" / "query.md"


def example_queries() -> list[list[str]]:
    out = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("phototag search "):
                out.append(shlex.split(line)[2:])  # what the shell hands the CLI
    return out


def test_every_field_and_sort_key_is_documented():
    text = DOC.read_text(encoding="utf-8")
    missing = [s.name for s in field_specs() if f"`{s.name}:" not in text]
    assert not missing, f"fields missing from docs/query.md: {missing}"
    missing_sorts = [name for name in sort_names() if f"`{name}`" not in text]
    assert not missing_sorts, f"sort keys missing from docs/query.md: {missing_sorts}"


@pytest.mark.parametrize("words", example_queries(), ids=lambda w: " ".join(w))
def test_documented_examples_parse(words):
    parse(words, now=NOW)


def documented_errors() -> list[tuple[list[str], str]]:
    """``$ phototag search ARGS`` lines of the text blocks, each with the ``error:`` line after it."""
    out = []
    for block in re.findall(r"```text\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        lines = block.splitlines()
        for line, following in zip(lines, lines[1:]):
            if line.startswith("$ phototag search ") and following.startswith("error: "):
                out.append((shlex.split(line)[3:], following[len("error: "):]))
    return out


def test_the_documented_error_messages_are_the_real_ones():
    errors = documented_errors()
    assert len(errors) >= 5 and ["camra:fuji"] in [words for words, _ in errors]
    for words, message in errors:
        with pytest.raises(QueryError) as info:
            parse(words, now=NOW)
        assert str(info.value) == message, words


def test_there_are_enough_examples():
    assert len(example_queries()) >= 30
