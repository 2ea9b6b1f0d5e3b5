"""Shared fixtures: real library homes in tmp dirs, real photos from ../shared and scikit-image."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TEST_PHOTOS = SHARED / "test-photos"
RAM_DATA = SHARED / "ram-data"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty library home, made the process-wide settings."""
    from phototag.config import load_settings, use_settings

    h = tmp_path / "home"
    monkeypatch.setenv("PHOTOTAG_HOME", str(h))
    settings = load_settings(h, environ={})
    use_settings(settings)
    yield settings
    use_settings(None)


@pytest.fixture
def library(home):
    from phototag.library import Library

    lib = Library(home)
    yield lib
    lib.close()


def save_sample(name: str, dest: Path, size: int | None = None, quality: int = 92) -> Path:
    """Write one of scikit-image's / scikit-learn's real photos as a JPEG file."""
    from PIL import Image

    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        array = data.images[[Path(f).stem for f in data.filenames].index(name)]
    else:
        from skimage import data as skdata

        array = getattr(skdata, name)()
    img = Image.fromarray(array).convert("RGB")
    if size:
        img.thumbnail((size, size))
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.save(dest, quality=quality)
    return dest


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory):
    """A folder of real, recognisable photos: cat, coffee, astronaut, rocket, china, flower."""
    folder = tmp_path_factory.mktemp("samples")
    for name in ("chelsea", "coffee", "astronaut", "rocket", "china", "flower"):
        save_sample(name, folder / f"{name}.jpg")
    return folder


def cli(home: Path, *args, code: int = 0):
    """``phototag --home HOME ARGS`` in this process (typer's runner); asserts the exit code."""
    from typer.testing import CliRunner

    from phototag.cli import app

    result = CliRunner().invoke(app, ["--home", str(home), *map(str, args)])
    assert result.exit_code == code, result.output
    return result


def cli_scan(home: Path, folder: Path) -> dict:
    """``phototag scan FOLDER --format json``'s report."""
    import json

    out = cli(home, "scan", folder, "--format", "json").stdout
    return json.loads(out[out.index("{"):])
