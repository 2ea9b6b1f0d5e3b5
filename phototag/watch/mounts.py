"""Where a watched root lives: the filesystem type under a path (from ``/proc/mounts``), and whether
it is a network filesystem, on which inotify sees no changes made by other machines (such roots are
watched by polling)."""

from __future__ import annotations

import os
from pathlib import Path

#: filesystem types on which inotify sees no changes made by other machines: watched by polling
NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "afs", "ncpfs", "coda", "ceph",
    "glusterfs", "lustre", "gpfs", "davfs", "fuse.sshfs", "sshfs", "fuse.rclone", "fuse.s3fs",
    "fuse.gcsfuse", "fuse.glusterfs", "fuse.cephfs", "fuse.davfs2", "virtiofs", "vboxsf", "vmhgfs",
    "fuse.vmhgfs-fuse", "prl_fs", "drvfs",
}


def _unescape_mount(field_: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal
    out, i = [], 0
    while i < len(field_):
        octal = field_[i + 1:i + 4]
        if field_[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def filesystem_type(path: Path | str, mounts_text: str | None = None) -> str | None:
    """The filesystem type (``ext4``, ``nfs4``, ``fuse.sshfs`` …) that ``path`` lives on, from
    ``/proc/mounts`` (or ``mounts_text``); None when unknown (not Linux)."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    path = os.path.realpath(path)
    best, best_type = "", None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = _unescape_mount(parts[1])
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, parts[2]
    return best_type


def is_network_filesystem(path: Path | str, mounts_text: str | None = None) -> bool:
    fs = filesystem_type(path, mounts_text)
    return fs is not None and (fs in NETWORK_FILESYSTEMS or fs.split(".")[0] in {"nfs", "cifs", "smb3"})
