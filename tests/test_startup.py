"""Start-up: listing the commands imports none of the heavy libraries, a library at the head schema
opens without alembic, and the command line imports on a machine without ``fcntl`` or inotify
(macOS, Windows). Each check runs ``phototag`` as its own process, as a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
import typer.main

REPO = Path(__file__).resolve().parents[1]

#: what a run prints its imported modules with: ``phototag`` with ``sys.argv[1:]``, modules to ``$MODULES_OUT``
RUN_PHOTOTAG = textwrap.dedent("""
    import atexit, json, os, sys
    atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
    sys.argv[0] = "phototag"
    from phototag.cli import main
    main()
""")

#: makes ``fcntl`` and watchdog's inotify observer unimportable, as they are on Windows / macOS
HIDE_LINUX_ONLY = textwrap.dedent("""
    import importlib.abc, sys
    HIDDEN = ("fcntl", "watchdog.observers.inotify")

    class HideLinuxOnly(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == h or name.startswith(h + ".") for h in HIDDEN):
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, HideLinuxOnly())
    for name in HIDDEN:
        sys.modules.pop(name, None)
""")

HEAVY = ("torch", "sqlalchemy", "numpy", "alembic", "PIL")


def run_phototag(tmp_path: Path, *args: str, hide_linux_only: bool = False,
                 env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``phototag ARGS`` in a fresh interpreter; its result and the modules it had imported at exit."""
    out = tmp_path / "modules.json"
    out.unlink(missing_ok=True)
    code = (HIDE_LINUX_ONLY if hide_linux_only else "") + RUN_PHOTOTAG
    full_env = {**os.environ, "MODULES_OUT": str(out), "COLUMNS": "100", "PHOTOTAG_HOME": str(tmp_path / "home"),
                **(env or {})}
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                            env=full_env, cwd=tmp_path)
    modules = set(json.loads(out.read_text())) if out.exists() else set()
    return result, modules


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(name for name in HEAVY if name in modules)


def test_help_imports_no_heavy_library(tmp_path):
    result, modules = run_phototag(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "search" in result.stdout and "Find photos." in result.stdout
    assert heavy_in(modules) == []
    assert not any(name.startswith("phototag.cli.") for name in modules - {"phototag.cli.__init__"}), \
        sorted(name for name in modules if name.startswith("phototag.cli."))


def test_completing_a_command_name_imports_no_heavy_library(tmp_path):
    result, modules = run_phototag(tmp_path, env={"_PHOTOTAG_COMPLETE": "complete_bash",
                                                  "COMP_WORDS": "phototag se", "COMP_CWORD": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["search", "serve", "service"]
    assert heavy_in(modules) == []


def test_a_command_still_gets_its_own_options_completed(tmp_path):
    result, _ = run_phototag(tmp_path, env={"_PHOTOTAG_COMPLETE": "complete_bash",
                                            "COMP_WORDS": "phototag search --pri", "COMP_CWORD": "2"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["--print0"]


def test_cli_imports_and_helps_without_fcntl_or_inotify(tmp_path):
    """macOS and Windows have neither; `import phototag.cli` and `phototag --help` must not need them."""
    probe = subprocess.run([sys.executable, "-c", HIDE_LINUX_ONLY + textwrap.dedent("""
        try:
            import fcntl
        except ImportError:
            pass
        else:
            raise SystemExit("fcntl was not hidden")
        import phototag.cli
        print("imported")
    """)], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "imported"

    result, modules = run_phototag(tmp_path, "--help", hide_linux_only=True)
    assert result.returncode == 0, result.stderr
    assert "Find photos." in result.stdout
    assert "fcntl" not in modules and "watchdog.observers.inotify" not in modules


@pytest.mark.parametrize("command", ["search", "show", "tags", "config", "models", "db", "plugins", "export"])
def test_commands_that_need_no_lock_help_without_fcntl_or_inotify(tmp_path, command):
    """Commands other than watch/status/service (which use the watcher's lock) load on macOS/Windows too."""
    result, _ = run_phototag(tmp_path, command, "--help", hide_linux_only=True)
    assert result.returncode == 0, result.stderr
    assert "Usage: phototag " + command in " ".join(result.stdout.split())


def test_search_and_show_on_a_library_at_the_head_schema_import_no_alembic_or_torch(tmp_path, sample_photos):
    first, _ = run_phototag(tmp_path, "db", "upgrade")  # a new library: created through alembic
    assert first.returncode == 0, first.stderr
    photo = next(p for p in sorted(sample_photos.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for args in (("search", "cat"), ("show", str(photo))):
        result, modules = run_phototag(tmp_path, *args)
        assert result.returncode in (0, 1, 2), result.stderr  # nothing matched / not in the library: no traceback
        assert "Traceback" not in result.stderr
        assert "sqlalchemy" in modules  # it did open the library
        assert "alembic" not in modules and "torch" not in modules, args


def test_models_list_and_a_wrong_model_name_load_no_torch(tmp_path):
    """Listing packs reads their pack.json files; torch/timm come in only to convert or run a model."""
    result, modules = run_phototag(tmp_path, "models", "list")
    assert result.returncode == 0, result.stderr
    assert "builtin" in result.stdout and "torch" not in modules and "timm" not in modules
    for args in (("models", "default", "ram_plus"), ("scan", "--model", "ram_plus", str(tmp_path))):
        result, modules = run_phototag(tmp_path, *args)
        assert result.returncode == 2 and "ram_plus" in result.stderr and "Traceback" not in result.stderr
        assert "torch" not in modules, args  # the name is checked before a model is loaded


def test_the_head_read_from_the_migration_files_is_alembics():
    from phototag.db.engine import _head_from_files, head_revision

    assert _head_from_files() == head_revision()


def test_a_library_behind_the_head_is_still_upgraded_with_a_backup(tmp_path):
    """The alembic-free check must not hide an upgrade: a library one revision back is upgraded, after a backup."""
    import sqlite3

    from alembic.script import ScriptDirectory

    from phototag.db.engine import _alembic_config, head_revision, open_database

    previous = ScriptDirectory.from_config(_alembic_config()).get_revision(head_revision()).down_revision
    assert previous, "needs at least two migrations"
    path = tmp_path / "phototag.db"
    db = open_database(path, upgrade=False)
    db.upgrade(previous)
    db.dispose()
    con = sqlite3.connect(path)
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(previous,)]
    con.close()

    db = open_database(path)
    assert db.current_revision() == head_revision()
    db.dispose()
    assert [p.name.split("-")[0] for p in tmp_path.glob("*.bak")] == [f"phototag.db.pre"]


def test_the_command_table_is_each_commands_own_help_in_order():
    """`phototag --help` lists the commands from phototag.cli.COMMANDS without importing them: the
    listing must be what the commands themselves would show, and every command module must be in it."""
    from phototag.cli import COMMANDS, LazyGroup, app

    modules = sorted(p.stem for p in (REPO / "phototag" / "cli").glob("*.py") if p.stem not in ("__init__", "common"))
    assert sorted(COMMANDS) == modules

    group = typer.main.get_command(app)
    assert isinstance(group, LazyGroup)
    ctx = click.Context(group, info_name="phototag", terminal_width=100, max_content_width=100)
    listed = group.get_help(ctx)
    group.load_all()
    assert not any(type(cmd).__name__ == "_CommandName" for cmd in group.commands.values())
    assert list(group.commands) == list(COMMANDS)
    assert group.get_help(ctx) == listed
