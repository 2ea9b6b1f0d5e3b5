"""phototag's core never imports a bundled plugin: with ``phototag_plugins`` unimportable, the scan
and watch code and the CLI import, and a photo's keywords and sidecar edits are still read (reading
sidecars is the core's job, phototag.ingest.keywords; the xmp plugin only writes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

from conftest import save_sample
from phototag_plugin_helpers import HERE

HIDDEN = textwrap.dedent('''
    import json, sys

    class HideBundledPlugins:
        def find_spec(self, name, path=None, target=None):
            if name == "phototag_plugins" or name.startswith("phototag_plugins."):
                raise ImportError(f"{name} is hidden by the test")

    sys.meta_path.insert(0, HideBundledPlugins())
    import phototag.cli, phototag.export.auto, phototag.export.service, phototag.watch.daemon, phototag.pipeline
    from phototag.config import load_settings
    from phototag.ingest.keywords import keyword_root, read_keywords, sidecar_stat

    settings = load_settings(sys.argv[2], environ={})
    print(json.dumps({"keywords": read_keywords(sys.argv[1], root=keyword_root(settings)),
                      "default_root": read_keywords(sys.argv[1]), "stat": sidecar_stat(sys.argv[1]),
                      "plugins": sorted(m for m in sys.modules if m.startswith("phototag_plugins"))}))
''')


def test_keywords_are_read_with_the_bundled_plugins_unimportable(tmp_path):
    photo = save_sample("chelsea", tmp_path / "cat.jpg", size=64)
    sidecar = photo.with_name("cat.jpg.xmp")
    shutil.copy(HERE / "xmp_fixtures" / "darktable.xmp", sidecar)
    from phototag_plugins.xmp.sidecar import update_keywords

    update_keywords(sidecar, [("animal", "cat")], "mine", create=False)  # written under a configured root
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[plugins.xmp]\nroot = "mine"\n')

    done = subprocess.run([sys.executable, "-c", HIDDEN, str(photo), str(home)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["plugins"] == []
    # the user's keywords; phototag's tree under the root [plugins.xmp] root names is not one of them
    assert result["keywords"] == ["holiday", "pets/cat", "places/Budapest"]
    assert "mine/animal/cat" in result["default_root"]
    assert result["stat"].startswith(".jpg.xmp:")
