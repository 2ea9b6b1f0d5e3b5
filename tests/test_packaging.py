"""The wheel carries every package: phototag, phototag_plugins (plugins/), phototag_migrations."""

import tomllib

from conftest import REPO

MAPPING = {"phototag": "phototag", "phototag_plugins": "plugins", "phototag_migrations": "migrations"}


def test_every_python_package_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in MAPPING.items():
        base = REPO / folder
        for init in base.rglob("*.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(base)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert config["package-dir"] == {"phototag_migrations": "migrations", "phototag_plugins": "plugins"}
