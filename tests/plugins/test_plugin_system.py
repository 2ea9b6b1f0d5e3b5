"""Plugin discovery through real entry points, enabling, listing, and the hook facades."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
from phototag_plugin_helpers import add_photo, make_home, make_library, model_tag  # noqa: F401
from typer.testing import CliRunner

from phototag import plugins
from phototag.config import use_settings
from phototag.export import Exporter
from phototag.tagging.base import TagScore

PLUGIN_SOURCE = textwrap.dedent('''
    """A third-party plugin, installed as a distribution with an entry point."""
    from phototag.hookspecs import hookimpl
    from phototag.export import Exporter, ExportResult

    LOADED = []
    CALLS = []

    class ListExporter(Exporter):
        name = "list"

        def write(self, item, dry_run):
            CALLS.append(("write", item.photo_id, [t.path for t in item.tags]))
            return ExportResult(self.name, item.photo_id, str(item.path), "written", "memory")

        def is_current(self, item, state_target):
            return True

    @hookimpl
    def register_exporters(settings):
        return [ListExporter(settings.section("plugins.hello"))]

    @hookimpl
    def adjust_tags(photo_path, tags, model_id):
        tags[:] = [t for t in tags if t.name != "blurry"]

    @hookimpl
    def photos_tagged(library, photo_ids):
        CALLS.append(("photos_tagged", list(photo_ids)))

    LOADED.append(1)
''')

SECOND_SOURCE = textwrap.dedent('''
    from phototag.hookspecs import hookimpl
    from phototag.tagging.base import TagScore

    @hookimpl
    def adjust_tags(tags):
        tags.append(TagScore("seen by second", 1.0))

    @hookimpl
    def photos_tagged(photo_ids):
        raise RuntimeError("second plugin broke")
''')


def _install(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Install a distribution the way pip lays it out: modules + a .dist-info with entry points."""
    info = site / f"{dist}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[phototag]\n{lines}\n")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    site.mkdir()
    _install(site, "phototag_hello", "1.2.3", {"hello": "phototag_hello"}, {"phototag_hello": PLUGIN_SOURCE})
    _install(site, "phototag_second", "0.1", {"second": "phototag_second"}, {"phototag_second": SECOND_SOURCE})
    _install(site, "phototag_broken", "0.0.1", {"broken": "phototag_broken"},
             {"phototag_broken": "raise ImportError('needs libfoo')\n"})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    for name in ("phototag_hello", "phototag_second", "phototag_broken"):
        sys.modules.pop(name, None)
    plugins.reset_plugins()


def test_installed_plugins_are_listed_but_inactive_until_enabled(site, tmp_path):
    settings = make_home(tmp_path, {})
    rows = {r.name: r for r in plugins.list_plugins(settings)}
    assert rows["hello"].version == "1.2.3" and rows["hello"].distribution == "phototag_hello"
    assert rows["hello"].hooks == ["adjust_tags", "photos_tagged", "register_exporters"]
    assert rows["hello"].enabled is False
    assert rows["xmp"].enabled is False and rows["xmp"].hooks == ["register_exporters"]  # bundled, same way
    assert rows["phototag.export.auto"].enabled is True and rows["phototag.export.auto"].kind == "builtin"
    assert "needs libfoo" in rows["broken"].error
    assert "list" not in plugins.exporters(settings)
    assert plugins.adjust_tags("/p.jpg", [TagScore("blurry", 0.9)], "m") == [TagScore("blurry", 0.9)]


def test_enabled_plugins_load_once_and_their_hooks_run(site, tmp_path):
    settings = make_home(tmp_path, {"plugins": {"enabled": ["hello", "second", "broken", "missing"]}})
    pm = plugins.load_plugins(settings)
    assert plugins.load_plugins(settings) is pm
    module = sys.modules["phototag_hello"]
    assert module.LOADED == [1]  # imported once, however often load_plugins runs
    assert pm.get_plugin("hello") is module

    exporters = plugins.exporters(settings)
    assert isinstance(exporters["list"], Exporter)
    tags = [TagScore("cat", 0.9), TagScore("blurry", 0.6)]
    adjusted = plugins.adjust_tags("/p.jpg", tags, "builtin/x")
    assert [t.name for t in adjusted] == ["cat", "seen by second"]
    assert [t.name for t in tags] == ["cat", "blurry"]  # the caller's list is not edited

    rows = {r.name: r for r in plugins.list_plugins(settings)}
    assert rows["hello"].enabled and rows["second"].enabled
    assert not rows["broken"].enabled and "needs libfoo" in rows["broken"].error
    assert not rows["missing"].enabled and "not installed" in rows["missing"].error


def test_one_failing_photos_tagged_hook_does_not_stop_the_others(site, make_library, tmp_path):
    lib = make_library({"plugins": {"enabled": ["hello", "second"]}, "export": {"auto": False}})
    errors = plugins.photos_tagged(lib, [1, 2])
    assert errors == ["second: second plugin broke"]
    assert ("photos_tagged", [1, 2]) in sys.modules["phototag_hello"].CALLS


def test_auto_export_after_tagging_uses_the_enabled_exporters(site, make_library, tmp_path):
    from conftest import save_sample

    lib = make_library({"plugins": {"enabled": ["hello"]}})
    photo_id = add_photo(lib, save_sample("chelsea", tmp_path / "cat.jpg", size=64))
    model_tag(lib, photo_id, ["tabby cat"])
    assert plugins.photos_tagged(lib, [photo_id]) == []
    calls = sys.modules["phototag_hello"].CALLS
    assert ("write", photo_id, [("animal", "cat", "tabby cat")]) in calls

    calls.clear()
    plugins.reset_plugins()
    lib.settings.data["export"] = {"auto": False}
    plugins.photos_tagged(lib, [photo_id])
    assert [c for c in calls if c[0] == "write"] == []


def test_naming_an_installed_exporter_runs_it_but_enables_nothing_else(site, make_library, tmp_path):
    """`--to list` is consent to run that exporter: its plugin's other hooks stay off, and nothing
    of it runs after tagging (not even when [export] auto names it)."""
    from conftest import save_sample

    from phototag.export import ExportError
    from phototag.export.service import export_photos

    lib = make_library({"export": {"auto": ["list"]}})  # nothing enabled
    photo_id = add_photo(lib, save_sample("chelsea", tmp_path / "cat.jpg", size=64))
    model_tag(lib, photo_id, ["tabby cat"])
    assert export_photos(lib, None, ["list"]).counts() == {"written": 1}
    calls = sys.modules["phototag_hello"].CALLS
    assert calls == [("write", photo_id, [("animal", "cat", "tabby cat")])]

    calls.clear()
    assert plugins.photos_tagged(lib, [photo_id]) == []
    assert calls == []  # neither its photos_tagged hook nor an automatic export
    assert plugins.adjust_tags("/p.jpg", [TagScore("blurry", 0.9)], "m") == [TagScore("blurry", 0.9)]
    assert "list" not in plugins.exporters(lib.settings)
    with pytest.raises(ExportError) as excinfo:
        export_photos(lib, None, ["lightroom"])
    message = str(excinfo.value)
    assert "no exporter named 'lightroom' (installed: digikam, list, xmp)" in message
    assert "plugin 'broken' is installed but unusable: cannot import phototag_broken: needs libfoo" in message


def test_phototag_plugins_command(site, tmp_path):
    import typer

    from phototag.cli.plugins import register

    settings = make_home(tmp_path, {"plugins": {"enabled": ["hello"]}})
    app = typer.Typer()
    register(app)

    @app.callback()
    def root() -> None:
        use_settings(settings)

    result = CliRunner().invoke(app, ["plugins", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["hello"] == {
        "name": "hello", "version": "1.2.3", "hooks": ["adjust_tags", "photos_tagged", "register_exporters"],
        "enabled": True, "kind": "entry point", "module": "phototag_hello", "distribution": "phototag_hello",
        "error": None}
    assert rows["xmp"]["enabled"] is False
    table = CliRunner().invoke(app, ["plugins"])
    assert table.exit_code == 0 and "hello" in table.stdout and "1.2.3" in table.stdout


def test_duplicate_exporter_names_are_an_error(site, tmp_path):
    settings = make_home(tmp_path, {"plugins": {"enabled": ["hello"]}})
    plugins.load_plugins(settings)

    class Twin:
        @staticmethod
        @__import__("phototag.hookspecs", fromlist=["hookimpl"]).hookimpl
        def register_exporters(settings):
            return [sys.modules["phototag_hello"].ListExporter()]

    plugins.register_plugin(Twin, "twin")
    with pytest.raises(plugins.PluginError, match="two plugins provide an exporter named 'list'"):
        plugins.exporters(settings)


EXTRAS_SOURCE = textwrap.dedent('''
    from phototag.hookspecs import hookimpl
    from phototag.query.fields import FieldSpec
    from phototag.query.nodes import All
    from phototag.tagging.base import Prediction, Tagger, TagScore

    class ConstantTagger(Tagger):
        name = "constant"
        model_id = "plugin/constant"

        @property
        def weights_sha256(self):
            return "0" * 64

        def prepare(self, image):
            return image.size

        def predict(self, batch):
            return [Prediction(tags=[TagScore("thing", 1.0)]) for _ in batch]

    @hookimpl
    def register_taggers(settings):
        return [ConstantTagger()]

    @hookimpl
    def register_query_fields():
        return [FieldSpec("anything", lambda value: All(), "matches every photo")]
''')


def test_extra_taggers_and_query_fields(site, tmp_path):
    _install(site, "phototag_extras", "2.0", {"extras": "phototag_extras"}, {"phototag_extras": EXTRAS_SOURCE})
    importlib.invalidate_caches()
    try:
        settings = make_home(tmp_path, {"plugins": {"enabled": ["extras"]}})
        [tagger] = plugins.taggers(settings)
        assert tagger.name == "constant" and tagger.predict([(1, 1)])[0].tags == [TagScore("thing", 1.0)]
        [field] = plugins.query_fields(settings)
        assert field.name == "anything" and field.help == "matches every photo"
        row = {r.name: r for r in plugins.list_plugins(settings)}["extras"]
        assert row.hooks == ["register_query_fields", "register_taggers"] and row.version == "2.0"
    finally:
        sys.modules.pop("phototag_extras", None)
