"""Settings through the real command line: a wrong value of any setting is one line and exit 2;
`phototag config` and `phototag plugins enable|disable` change config.toml keeping its comments."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phototag.cli import app
from phototag.config import DEFAULTS, SCHEMA, Setting, check_config_text, show_value, use_settings

#: a wrong-typed TOML literal for each declared type
WRONG_TOML = {"str": "5", "int": '"x"', "float": '"abc"', "bool": '"yes"', "list[str]": '".jpg"',
              "bool|list[str]": '"xmp"'}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("PHOTOTAG_"):
            monkeypatch.delenv(name)
    yield
    use_settings(None)


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def phototag(home: Path, *args: str, env: dict | None = None, input: str | None = None):
    return CliRunner().invoke(app, ["--home", str(home), *args], env=env, input=input)


def toml_for(key: str, literal: str) -> str:
    table, _, name = key.rpartition(".")
    return (f"[{table}]\n" if table else "") + f"{name} = {literal}\n"


def assert_one_line_error(result, *parts: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


@pytest.mark.parametrize("spec", SCHEMA, ids=lambda s: s.key)
def test_a_wrong_typed_value_of_any_setting_is_one_line_and_exit_2(home, spec: Setting):
    literal = WRONG_TOML[spec.type]
    (home / "config.toml").write_text(toml_for(spec.key, literal))
    result = phototag(home, "tags")
    assert_one_line_error(result, str(home / "config.toml"), f"{spec.key} = {literal}: expected {spec.expectation()}")
    assert not (home / "phototag.db").exists(), "the command ran with a bad setting"


#: a wrong PHOTOTAG_* text for each setting whose type leaves room for one
WRONG_ENV = {"int": "x", "float": "abc", "bool": "maybe"}


def _wrong_env_text(spec: Setting) -> str | None:
    if spec.type in WRONG_ENV:
        return WRONG_ENV[spec.type]
    if spec.type == "str" and (spec.choices or spec.pattern):
        return "a/b|bogus"
    if spec.type == "list[str]" and (spec.choices or spec.pattern):
        return "bogus"
    return None


@pytest.mark.parametrize("spec", [s for s in SCHEMA if _wrong_env_text(s) is not None], ids=lambda s: s.key)
def test_a_wrong_environment_value_is_one_line_and_exit_2(home, spec: Setting):
    text = _wrong_env_text(spec)
    result = phototag(home, "tags", env={spec.env_name: text})
    assert_one_line_error(result, f"{spec.env_name}={text!r}", f"{spec.key} expects {spec.expectation()}")


@pytest.mark.parametrize(("config", "env", "command", "expected"), [
    ('[scan]\nmax_pixels = "big"\n', {}, "scan", 'scan.max_pixels = "big": expected an integer'),
    ('batch_size = "x"\n', {}, "scan", 'batch_size = "x": expected an integer'),
    ("scan = 5\n", {}, "scan", "scan = 5: expected a table"),
    ('[watch]\nstable_seconds = "abc"\n', {}, "watch", 'watch.stable_seconds = "abc": expected a number'),
    ('[scan]\nextensions = ".jpg"\n', {}, "scan", 'scan.extensions = ".jpg": expected a list of strings'),
    ('[plugins]\nenabled = "xmp"\n', {}, "export", 'plugins.enabled = "xmp": expected a list of strings'),
    ("", {"PHOTOTAG_BATCH_SIZE": "x"}, "scan", "PHOTOTAG_BATCH_SIZE='x': batch_size expects an integer"),
])
def test_the_reported_configs_in_a_real_process(home, tmp_path, config, env, command, expected):
    """The issue's cases, as a user meets them: `python -m phototag`, a real home and folder."""
    (home / "config.toml").write_text(config)
    photos = tmp_path / "photos"
    photos.mkdir()
    args = {"scan": ["scan", str(photos)], "watch": ["watch", str(photos)], "export": ["export", "--dry-run"]}
    proc = subprocess.run([sys.executable, "-m", "phototag", "--home", str(home), *args[command]],
                          capture_output=True, text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("PHOTOTAG_")}, **env})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


# ---- phototag config --------------------------------------------------------------------------------

COMMENTED = """\
# my settings
batch_size = 2   # my laptop is small

[watch]
# the NAS is slow
stable_seconds = 10.0
"""


def test_config_path(home):
    result = phototag(home, "config", "path")
    assert result.exit_code == 0 and result.stdout.strip() == str(home / "config.toml")


def test_config_set_checks_the_value_and_keeps_comments(home):
    path = home / "config.toml"
    path.write_text(COMMENTED)
    result = phototag(home, "config", "set", "watch.stable_seconds", "5")
    assert result.exit_code == 0, result.output
    result = phototag(home, "config", "set", "scan.extensions", ".jpg,.heic")
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert "# my settings" in text and "# my laptop is small" in text and "# the NAS is slow" in text
    assert tomllib.loads(text) == {"batch_size": 2, "watch": {"stable_seconds": 5.0},
                                   "scan": {"extensions": [".jpg", ".heic"]}}
    before = path.read_bytes()
    for key, value, expected in [("batch_size", "x", "batch_size = 'x': expected an integer ≥ 0"),
                                 ("scan.extensions", "jpg", "expected a list of strings (each starting with \".\")"),
                                 ("batchsize", "3", "unknown setting 'batchsize' (did you mean 'batch_size'?)"),
                                 ("precision", "fp8", 'expected one of "auto", "fp32", "bf16", "fp16"')]:
        assert_one_line_error(phototag(home, "config", "set", key, value), expected)
    assert path.read_bytes() == before


def test_config_set_mends_a_broken_file(home):
    path = home / "config.toml"
    path.write_text('# keep me\nbatch_size = "x"\n[watch]\nstable_seconds = "abc"\n')
    assert phototag(home, "tags").exit_code == 2
    result = phototag(home, "config", "set", "batch_size", "4")
    assert result.exit_code == 2 and "watch.stable_seconds" in result.stderr  # saved, one problem left
    assert tomllib.loads(path.read_text())["batch_size"] == 4
    assert phototag(home, "config", "set", "watch.stable_seconds", "2").exit_code == 0
    assert path.read_text().startswith("# keep me\n")
    assert phototag(home, "config", "get", "watch.stable_seconds").stdout == "2.0\n"


def test_config_show_and_get(home):
    (home / "config.toml").write_text(COMMENTED)
    shown = phototag(home, "config", "show", "--format", "json", env={"PHOTOTAG_DEVICE": "cpu"})
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    expected = json.loads(json.dumps(DEFAULTS))
    expected["batch_size"], expected["watch"]["stable_seconds"], expected["device"] = 2, 10.0, "cpu"
    assert data == expected
    text = phototag(home, "config", "show", env={"PHOTOTAG_DEVICE": "cpu"}).stdout
    assert "batch_size = 2  # from config.toml" in text and 'device = "cpu"  # from PHOTOTAG_DEVICE' in text
    assert "\n[watch]\n" in text and "stable_seconds = 10.0  # from config.toml" in text
    assert "# threshold is unset" in text
    assert phototag(home, "config", "get", "batch_size").stdout == "2\n"
    assert phototag(home, "config", "get", "default_model").stdout == "builtin\n"
    assert phototag(home, "config", "get", "plugins.xmp.languages").stdout == '["en"]\n'
    assert "stable_seconds = 10.0\n" in phototag(home, "config", "get", "watch").stdout
    unset = phototag(home, "config", "get", "threshold")
    assert unset.exit_code == 1 and unset.stdout == ""
    assert_one_line_error(phototag(home, "config", "get", "watch.stable_second"),
                          "did you mean 'watch.stable_seconds'?")


def test_config_show_refuses_a_broken_file_with_one_line(home):
    (home / "config.toml").write_text("[scan]\nmax_pixels = \"big\"\n")
    assert_one_line_error(phototag(home, "config", "show"), 'scan.max_pixels = "big"', "phototag config edit")


def test_config_unset(home):
    (home / "config.toml").write_text(COMMENTED)
    result = phototag(home, "config", "unset", "batch_size")
    assert result.exit_code == 0 and "back to its default (0)" in result.stdout
    assert "batch_size" not in tomllib.loads((home / "config.toml").read_text())
    assert "# the NAS is slow" in (home / "config.toml").read_text()


# -- config edit, with a real editor process -------------------------------------------------------

EDITOR = textwrap.dedent("""\
    import os, sys
    path = sys.argv[1]
    text = open(path, encoding="utf-8").read()
    open(path, "w", encoding="utf-8").write(text.replace(os.environ["OLD"], os.environ["NEW"]))
""")


def edit(home: Path, tmp_path: Path, old: str, new: str):
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    return phototag(home, "config", "edit",
                    env={"VISUAL": None, "EDITOR": f"{sys.executable} {script}", "OLD": old, "NEW": new})


def test_config_edit_saves_a_valid_edit(home, tmp_path):
    (home / "config.toml").write_text(COMMENTED)
    result = edit(home, tmp_path, "batch_size = 2", "batch_size = 8")
    assert result.exit_code == 0, result.output
    assert (home / "config.toml").read_text() == COMMENTED.replace("batch_size = 2", "batch_size = 8")
    assert sorted(p.name for p in home.iterdir()) == ["config.toml"]


def test_config_edit_with_a_mistake_keeps_the_file_and_the_edit(home, tmp_path):
    (home / "config.toml").write_text(COMMENTED)
    result = edit(home, tmp_path, "stable_seconds = 10.0", 'stable_seconds = "abc"')
    assert result.exit_code == 2
    assert 'watch.stable_seconds = "abc": expected a number ≥ 0' in result.stderr
    assert (home / "config.toml").read_text() == COMMENTED
    drafts = [p for p in home.iterdir() if p.name != "config.toml"]
    assert len(drafts) == 1 and str(drafts[0]) in result.stderr
    assert 'stable_seconds = "abc"' in drafts[0].read_text()


def test_config_edit_starts_a_new_file_from_a_template_of_every_setting(home, tmp_path):
    result = edit(home, tmp_path, "# batch_size = 0", "batch_size = 3")
    assert result.exit_code == 0, result.output
    assert load_file(home) == {"batch_size": 3}
    from phototag.cli.config import template

    every = "\n".join(line[2:] if re.match(r"# (\[[\w.]+\]|\w+ = .*)$", line) else line
                      for line in template().splitlines())
    assert check_config_text(every, "template") == _without_none(DEFAULTS)  # uncommented: the defaults
    assert all(f"# {s.doc}" in template() for s in SCHEMA)


def _without_none(tree: dict) -> dict:
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None}


def load_file(home: Path) -> dict:
    return tomllib.loads((home / "config.toml").read_text())


# ---- plugins enable / disable -------------------------------------------------------------------


def test_plugins_enable_and_disable_keep_comments(home):
    (home / "config.toml").write_text("# mine\n[plugins]\n# what runs after tagging\nenabled = []\n")
    result = phototag(home, "plugins", "enable", "xmp")
    assert result.exit_code == 0 and "enabled xmp" in result.stdout
    assert phototag(home, "plugins", "enable", "xmp").stdout.strip() == "xmp is already enabled"
    assert phototag(home, "plugins", "enable", "digikam").exit_code == 0
    text = (home / "config.toml").read_text()
    assert text.startswith("# mine\n[plugins]\n# what runs after tagging\n")
    assert tomllib.loads(text)["plugins"]["enabled"] == ["xmp", "digikam"]
    listed = {r["name"]: r["enabled"] for r in json.loads(phototag(home, "plugins", "--format", "json").stdout)}
    assert listed["xmp"] is True and listed["digikam"] is True
    assert phototag(home, "plugins", "disable", "xmp").exit_code == 0
    assert load_file(home)["plugins"]["enabled"] == ["digikam"]
    assert phototag(home, "plugins", "disable", "xmp").stdout.strip() == "xmp is not enabled"


def test_enabling_an_unknown_plugin_names_the_installed_ones(home):
    result = phototag(home, "plugins", "enable", "xmpp")
    line = assert_one_line_error(result, "no installed plugin is called 'xmpp'")
    assert re.search(r"installed: .*digikam.*xmp", line)
    assert not (home / "config.toml").exists()


def test_models_default_keeps_comments(home):
    (home / "config.toml").write_text(COMMENTED)
    result = phototag(home, "models", "default", "builtin")
    assert result.exit_code == 0, result.output
    text = (home / "config.toml").read_text()
    assert all(line in text.splitlines() for line in COMMENTED.splitlines())
    assert load_file(home)["default_model"] == "builtin"


def test_show_value_writes_toml():
    assert show_value([".jpg", "ü"]) == '[".jpg", "ü"]' and show_value(True) == "true" and show_value(2.0) == "2.0"
