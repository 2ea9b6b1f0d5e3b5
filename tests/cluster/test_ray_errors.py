"""--ray's one-line errors: Ray missing, an address nobody answers at, a bad path map (no cluster needed)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from conftest import cli


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("command", ["scan", "retag"])
def test_an_address_nobody_answers_at_is_one_line_and_exit_2(home, sample_photos, command):
    port = _closed_port()
    args = [command, "--ray", f"127.0.0.1:{port}", *([sample_photos] if command == "scan" else [])]
    result = cli(home.home, *args, code=2)
    lines = result.output.strip().splitlines()
    assert lines == [f"error: cannot connect to the Ray cluster at 127.0.0.1:{port}: Connection refused"]


def test_an_address_that_is_not_one_is_one_line(home, sample_photos):
    result = cli(home.home, "scan", "--ray", "nowhere", sample_photos, code=2)
    assert result.output.strip().splitlines() == [
        "error: cannot connect to the Ray cluster at nowhere: expected auto, local, HOST:PORT or ray://HOST:PORT"]


def test_without_ray_installed_the_error_says_how_to_install_it(tmp_path, sample_photos):
    code = ("import sys; sys.modules['ray'] = None; from phototag.cli import main; "
            f"sys.argv = ['phototag', '--home', {str(tmp_path / 'home')!r}, 'scan', '--ray', 'auto', "
            f"{str(sample_photos)!r}]; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip().splitlines() + done.stderr.strip().splitlines() == [
        "error: --ray needs Ray, which is not installed: pip install 'phototag[ray]'"]


def test_path_map_maps_whole_folders_and_keeps_bytes():
    from phototag.cluster.paths import PathMap

    pm = PathMap(["/home/me/Pictures=/mnt/nas/Pictures", "/home/me=/mnt/home"])
    assert pm.to_worker("/home/me/Pictures/a.jpg") == b"/mnt/nas/Pictures/a.jpg"
    assert pm.to_worker("/home/me/Pictures2/a.jpg") == b"/mnt/home/Pictures2/a.jpg"  # a folder boundary
    assert pm.to_worker(b"/home/me/caf\xe9.jpg".decode("utf-8", "surrogateescape")) == b"/mnt/home/caf\xe9.jpg"
    assert pm.to_worker("/srv/x.jpg") == b"/srv/x.jpg"
    from phototag.cluster import ClusterError

    with pytest.raises(ClusterError, match="LOCAL_PREFIX=WORKER_PREFIX"):
        PathMap(["/home/me"])
