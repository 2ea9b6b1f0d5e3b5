"""Settings: one declared schema, validated on load (config.toml and PHOTOTAG_*), written back with
the user's comments kept. docs/configuration.md is checked against the schema here."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path

import pytest

from phototag.config import (
    DEFAULTS,
    SCHEMA,
    SETTINGS,
    TABLES,
    ConfigError,
    Setting,
    load_settings,
    set_in_config,
    show_value,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG_DOC = REPO / "docs" / "configuration.md"


def test_defaults_file_and_env_layering(tmp_path):
    home = tmp_path / "h"
    settings = load_settings(home, environ={})
    assert settings.default_model == "builtin"
    assert settings.get("watch.stable_seconds") == 3.0
    settings.set_default_model("ram_plus")
    settings.set_value("watch.stable_seconds", 5)
    assert "default_model" in (home / "config.toml").read_text()
    again = load_settings(home, environ={})
    assert again.default_model == "ram_plus"
    assert again.get("watch.stable_seconds") == 5
    env = load_settings(home, environ={"PHOTOTAG_DEFAULT_MODEL": "tag2text", "PHOTOTAG_WATCH__STABLE_SECONDS": "7.5"})
    assert env.default_model == "tag2text"
    assert env.get("watch.stable_seconds") == 7.5
    assert env.source("default_model") == "PHOTOTAG_DEFAULT_MODEL"
    assert again.source("default_model") == "config.toml" and again.source("batch_size") == "default"


def test_home_from_environment(tmp_path):
    settings = load_settings(environ={"PHOTOTAG_HOME": str(tmp_path / "x")})
    assert settings.home == (tmp_path / "x").resolve()
    assert settings.db_path == (tmp_path / "x").resolve() / "phototag.db"


def test_broken_config_is_a_clear_error(tmp_path):
    (tmp_path / "config.toml").write_text("default_model = = 3\n")
    with pytest.raises(ConfigError, match="config.toml"):
        load_settings(tmp_path, environ={})


# ---- the schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SCHEMA, ids=lambda s: s.key)
def test_every_default_is_valid_and_documented(spec: Setting):
    assert spec.check(spec.default) == spec.default
    assert spec.doc and len(spec.doc.split()) >= 3 and "\n" not in spec.doc


def test_each_setting_is_declared_once():
    keys = [s.key for s in SCHEMA]
    assert len(keys) == len(set(keys))
    assert not set(keys) & TABLES, "a key is both a setting and a table"


def _keys_used_in_code() -> set[str]:
    """Every settings key the code reads: settings.get("…"), .section("…") and a string argument
    that is a key of one of the settings tables (watch.py's setting(value, "watch.x"))."""
    tables = "|".join(sorted({k.split(".")[0] for k in TABLES}))
    patterns = [
        re.compile(r"""settings\.get\(\s*["']([\w.]+)["']"""),
        re.compile(r"""\.section\(\s*["']([\w.]+)["']"""),
        # a key passed on to a helper: setting(stable_seconds, "watch.stable_seconds")
        re.compile(rf"""["']((?:{tables})\.[a-z_]+(?:\.[a-z_]+)?)["']\s*[,)]"""),
    ]
    found: set[str] = set()
    config_package = REPO / "phototag" / "config"  # declares the keys: not a reader of them
    for folder in ("phototag", "plugins"):
        for path in (REPO / folder).rglob("*.py"):
            if path.is_relative_to(config_package):
                continue
            text = path.read_text(encoding="utf-8")
            for pattern in patterns:
                found.update(pattern.findall(text))
    return found


def test_every_key_the_code_reads_is_declared():
    used = _keys_used_in_code()
    assert {"watch.stable_seconds", "scan.max_pixels", "retag.batch_limit", "export.auto",
            "plugins.xmp.root", "plugins.xmp", "batch_size"} <= used  # the scan finds them
    undeclared = sorted(k for k in used if k not in SETTINGS and k not in TABLES
                        and not k.startswith("plugins.hello"))
    assert not undeclared, f"read by the code but not declared in phototag.config.SCHEMA: {undeclared}"


@pytest.mark.parametrize("plugin", ["xmp", "digikam"])
def test_bundled_plugin_defaults_agree_with_the_schema(plugin):
    """The bundled plugins still carry their own DEFAULTS dict: it must say what the schema says."""
    import importlib

    module = importlib.import_module(f"phototag_plugins.{plugin}")
    assert module.DEFAULTS == DEFAULTS["plugins"][plugin]


# ---- validation -----------------------------------------------------------------------------------


def _write(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text, encoding="utf-8")


def _error(home: Path, environ: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(home, environ=environ or {})
    return str(info.value)


@pytest.mark.parametrize(("text", "expected"), [
    ('[scan]\nmax_pixels = "big"\n', 'scan.max_pixels = "big": expected an integer ≥ 1'),
    ('batch_size = "x"\n', 'batch_size = "x": expected an integer ≥ 0'),
    ("scan = 5\n", "scan = 5: expected a table ([scan] with follow_symlinks, extensions, max_pixels)"),
    ('[watch]\nstable_seconds = "abc"\n', 'watch.stable_seconds = "abc": expected a number ≥ 0'),
    ('[scan]\nextensions = ".jpg"\n', 'scan.extensions = ".jpg": expected a list of strings'),
    ('[scan]\nextensions = ["jpg"]\n', 'each starting with "."'),
    ('[plugins]\nenabled = "xmp"\n', 'plugins.enabled = "xmp": expected a list of strings, e.g. ["xmp"]'),
    ("threshold = 1.5\n", "threshold = 1.5: expected a number from 0 to 1"),
    ('precision = "fp8"\n', 'precision = "fp8": expected one of "auto", "fp32", "bf16", "fp16"'),
    ('[plugins.xmp]\nroot = "a/b"\n', 'plugins.xmp.root = "a/b": expected one keyword without / or |'),
    ("[watch]\npolling = 1\n", "watch.polling = 1: expected true or false"),
    ("[export]\nauto = \"xmp\"\n", 'export.auto = "xmp": expected true, false or a list of names'),
])
def test_the_reported_bad_values_are_one_clear_line(tmp_path, text, expected):
    _write(tmp_path, text)
    message = _error(tmp_path)
    assert expected in message
    assert "\n" not in message and message.startswith(str(tmp_path / "config.toml"))


@pytest.mark.parametrize(("text", "hint"), [
    ("batchsize = 3\n", "unknown setting 'batchsize' (did you mean 'batch_size'?)"),
    ("stable_seconds = 3\n", "did you mean 'watch.stable_seconds'?"),
    ("[watch]\nstable_second = 3\n", "did you mean 'watch.stable_seconds'?"),
    ("[plugins.xmpp]\nroot = 'x'\n", "no installed plugin is called 'xmpp' (did you mean 'plugins.xmp'?)"),
    ("[plugins.xmp]\nsidecars = true\n", "did you mean 'plugins.xmp.sidecar'?"),
])
def test_unknown_keys_are_refused(tmp_path, text, hint):
    _write(tmp_path, text)
    assert hint in _error(tmp_path)


def test_every_problem_is_listed_one_per_line(tmp_path):
    _write(tmp_path, 'batch_size = "x"\n[watch]\nstable_seconds = "abc"\n')
    lines = _error(tmp_path).splitlines()
    assert len(lines) == 2 and "batch_size" in lines[0] and "watch.stable_seconds" in lines[1]


def test_values_are_typed_as_declared(tmp_path):
    _write(tmp_path, "[watch]\nstable_seconds = 5\nroots = ['/a']\n[plugins]\nenabled = ['xmp']\n")
    settings = load_settings(tmp_path, environ={})
    assert settings.get("watch.stable_seconds") == 5.0 and isinstance(settings.get("watch.stable_seconds"), float)
    assert settings.plugins_enabled == ["xmp"]
    assert settings.get("retag.batch_limit") == 1000 and settings.get("export.auto") is True
    assert settings.section("plugins.xmp")["root"] == "phototag"


@pytest.mark.parametrize(("env", "expected"), [
    ({"PHOTOTAG_BATCH_SIZE": "x"}, "PHOTOTAG_BATCH_SIZE='x': batch_size expects an integer ≥ 0"),
    ({"PHOTOTAG_SCAN__MAX_PIXELS": "big"}, "PHOTOTAG_SCAN__MAX_PIXELS='big': scan.max_pixels expects an integer"),
    ({"PHOTOTAG_WATCH__POLLING": "maybe"}, "watch.polling expects true or false"),
    ({"PHOTOTAG_PRECISION": "fp8"}, "precision expects one of"),
    ({"PHOTOTAG_BATCHSIZE": "4"}, "PHOTOTAG_BATCHSIZE is not a setting (did you mean PHOTOTAG_BATCH_SIZE?)"),
])
def test_environment_values_are_validated_the_same_way(tmp_path, env, expected):
    message = _error(tmp_path, env)
    assert expected in message and "\n" not in message


def test_environment_text_is_read_as_the_declared_type(tmp_path):
    settings = load_settings(tmp_path, environ={
        "PHOTOTAG_BATCH_SIZE": "8", "PHOTOTAG_WATCH__POLLING": "true", "PHOTOTAG_SCAN__EXTENSIONS": ".jpg, .png",
        "PHOTOTAG_PLUGINS__ENABLED": '["xmp"]', "PHOTOTAG_THRESHOLD": "none", "PHOTOTAG_EXPORT__AUTO": "false",
        "PHOTOTAG_HOME": "/ignored", "PHOTOTAG_TEXT_MODEL": "/elsewhere"})
    assert settings.get("batch_size") == 8 and settings.get("watch.polling") is True
    assert settings.get("scan.extensions") == [".jpg", ".png"] and settings.plugins_enabled == ["xmp"]
    assert settings.get("threshold") is None and settings.get("export.auto") is False


# ---- writing ------------------------------------------------------------------------------------

COMMENTED = """\
# my phototag settings
default_model = "builtin"   # the small one for now

[watch]
# the NAS is slow
stable_seconds = 10.0  # seconds

[plugins]
enabled = [
    "xmp",  # sidecars for digiKam
]
"""


def test_set_value_keeps_comments_and_layout(tmp_path):
    _write(tmp_path, COMMENTED)
    settings = load_settings(tmp_path, environ={})
    settings.set_default_model("ram_plus")
    settings.set_value("watch.stable_seconds", 5)
    settings.set_value("plugins.enabled", ["xmp", "digikam"])
    settings.set_value("plugins.xmp.sidecar_style", "name.xmp")
    text = (tmp_path / "config.toml").read_text()
    for comment in ("# my phototag settings", "# the small one for now", "# the NAS is slow", "# seconds",
                    "# sidecars for digiKam"):
        assert comment in text
    assert 'default_model = "ram_plus"   # the small one for now' in text
    assert "stable_seconds = 5.0  # seconds" in text
    assert text.index("[watch]") < text.index("[plugins]") < text.index("[plugins.xmp]")
    again = load_settings(tmp_path, environ={})
    assert again.plugins_enabled == ["xmp", "digikam"] and again.get("plugins.xmp.sidecar_style") == "name.xmp"
    assert again.get("watch.stable_seconds") == 5.0 and again.default_model == "ram_plus"


def test_a_wrong_value_is_refused_and_the_file_is_untouched(tmp_path):
    _write(tmp_path, COMMENTED)
    before = (tmp_path / "config.toml").read_bytes()
    settings = load_settings(tmp_path, environ={})
    for key, value in [("batch_size", "x"), ("scan.extensions", ".jpg"), ("plugins.enabled", "xmp"),
                       ("batchsize", 3), ("watch", 5)]:
        with pytest.raises(ConfigError, match=re.escape(key)):
            settings.set_value(key, value)
    assert (tmp_path / "config.toml").read_bytes() == before
    assert settings.get("batch_size") == 0


def test_writes_are_atomic_and_keep_the_permissions(tmp_path):
    _write(tmp_path, COMMENTED)
    path = tmp_path / "config.toml"
    os.chmod(path, 0o600)
    inode = path.stat().st_ino
    set_in_config(path, "batch_size", 4)
    assert path.stat().st_ino != inode, "config.toml was rewritten in place, not replaced"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"], "a temp file was left behind"
    assert tomllib.loads(path.read_text())["batch_size"] == 4


def test_a_new_config_file_is_readable_by_its_owner_only(tmp_path):
    home = tmp_path / "new-home"
    load_settings(home, environ={}).set_value("batch_size", 4)
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o600
    assert sorted(p.name for p in home.iterdir()) == ["config.toml"], "a temp file was left behind"


def test_unsetting_an_optional_setting_removes_it(tmp_path):
    settings = load_settings(tmp_path, environ={})
    settings.set_value("retag.every", "30d")
    assert load_settings(tmp_path, environ={}).get("retag.every") == "30d"
    settings.set_value("retag.every", None)
    assert "every" not in (tmp_path / "config.toml").read_text()
    assert load_settings(tmp_path, environ={}).get("retag.every") is None


def test_a_new_plugin_table_gets_no_empty_parent_header(tmp_path):
    settings = load_settings(tmp_path, environ={})
    settings.set_value("plugins.xmp.root", "pt")
    settings.set_value("plugins.enabled", ["xmp"])
    text = (tmp_path / "config.toml").read_text()
    assert tomllib.loads(text) == {"plugins": {"enabled": ["xmp"], "xmp": {"root": "pt"}}}


# ---- docs/configuration.md mirrors the schema -------------------------------------------------------

BEGIN, END = "<!-- settings: generated from phototag.config.SCHEMA -->", "<!-- end of settings -->"


def settings_reference() -> str:
    """The settings part of docs/configuration.md, as the schema says it must be."""
    lines: list[str] = []
    table = None
    for spec in SCHEMA:
        parent = spec.key.rpartition(".")[0]
        if parent != table:
            title = f"`[{parent}]`" if parent else "Top level"
            lines += ["", f"### {title}", "", "| setting | type | default | meaning |", "|---|---|---|---|"]
            table = parent
        default = "unset" if spec.default is None else f"`{show_value(spec.default)}`"
        meaning = spec.doc.replace("|", "\\|")
        if spec.choices:
            meaning += " (" + ", ".join(f"`{c}`" for c in spec.choices) + ")"
        lines.append(f"| `{spec.key}` | {spec.type.replace('|', ' or ')} | {default} | {meaning} |")
    return "\n".join([BEGIN, *lines, "", END])


def test_configuration_doc_lists_every_setting_as_the_schema_declares_it():
    text = CONFIG_DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    expected = settings_reference()
    if os.environ.get("PHOTOTAG_UPDATE_GOLDEN") and text[start:end] != expected:
        CONFIG_DOC.write_text(text[:start] + expected + text[end:], encoding="utf-8")
        text = CONFIG_DOC.read_text(encoding="utf-8")
        start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == expected, ("docs/configuration.md is out of date with phototag.config.SCHEMA; "
                                         "run PHOTOTAG_UPDATE_GOLDEN=1 pytest tests/config/test_config.py")
