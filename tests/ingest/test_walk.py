"""Walking a folder: what counts as a photo, what is skipped, where links lead."""

import os

from phototag.config import DEFAULTS
from phototag.ingest.walk import iter_photo_files

EXTS = DEFAULTS["scan"]["extensions"]


def test_walk_skips_hidden_sidecars_and_links_out_of_root(tmp_path):
    root = tmp_path / "Pictures"
    (root / "trip").mkdir(parents=True)
    (root / ".cache").mkdir()
    (root / "@eaDir").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    for p in [root / "a.jpg", root / "trip" / "b.JPG", root / ".hidden.jpg", root / ".cache" / "c.jpg",
              root / "@eaDir" / "d.jpg", root / "a.jpg.xmp", root / "notes.txt", root / "e.jpg.part",
              outside / "secret.jpg"]:
        p.write_bytes(b"x")
    os.symlink(outside, root / "link-out")
    os.symlink(root / "trip", root / "link-in")
    os.symlink(root, root / "trip" / "loop")
    names = sorted(str(f.path.relative_to(root)) for f in iter_photo_files(root, EXTS))
    assert names == ["a.jpg", "trip/b.JPG"]
    followed = sorted(str(f.path.relative_to(root)) for f in iter_photo_files(root, EXTS, follow_symlinks=True))
    assert "link-out/secret.jpg" not in followed
    assert followed.count("a.jpg") == 1  # the loop back to root is not walked again
    assert "link-in/b.JPG" not in followed or "trip/b.JPG" not in followed  # each folder once
