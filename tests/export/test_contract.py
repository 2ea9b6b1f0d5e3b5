"""The exporter contract is a leaf: plugins import it without loading the database, the plugin manager
or the export service, and every module of the export package can be the first one imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "pluggy", "phototag.plugins", "phototag.hookspecs", "phototag.db", "phototag.export.service",
         "phototag.library", "phototag_plugins")


@pytest.fixture(autouse=True)
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOTAG_HOME", str(tmp_path / "home"))  # no config.toml: no plugin enabled


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_contract_loads_no_database_and_no_plugin_manager():
    loaded = _run(f"import sys; from phototag.export import Exporter, ExportResult, WRITTEN; "
                  f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))")
    assert loaded == "[]"


@pytest.mark.parametrize("module", ["phototag.export", "phototag.export.contract", "phototag.export.service",
                                    "phototag.export.auto", "phototag.plugins", "phototag.hookspecs"])
def test_any_module_of_the_plugin_contract_can_be_imported_first(module):
    """No import cycle between the contract, the service, the hookspecs and the plugin manager: each
    imports whole as the first module of a fresh interpreter, and the built-in hook registers."""
    assert _run(f"import {module}; from phototag import plugins; "
                "print(sorted(n for n, _ in plugins.load_plugins().list_name_plugin()))") == "['phototag.export.auto']"
