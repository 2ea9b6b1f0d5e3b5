"""``phototag service install``: the systemd user unit that runs ``phototag watch``.

The unit restarts the watcher when it exits non-zero (``Restart=on-failure``): a watcher that hits a
fatal error exits 1 on purpose (:class:`phototag.watch.errors.WatchFatal`).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from phototag import atomic
from phototag.errors import PhototagError

UNIT_NAME = "phototag.service"


class ServiceError(PhototagError):
    """The service cannot be installed; the message says why and what to do."""


@dataclass
class ServiceFiles:
    unit_path: Path
    text: str


def systemd_user_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "systemd" / "user"


def phototag_command() -> list[str]:
    """The absolute command that runs this phototag: the console script beside this Python if it is
    there, else ``python -m phototag``."""
    script = Path(sys.executable).parent / "phototag"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "phototag"]


def _systemd_quote(arg: str, command: bool = False) -> str:
    # systemd's ExecStart is not a shell: it expands % specifiers and $VARS (doubled, they stay literal)
    # and reads C escapes even inside single quotes, so shlex.quote mangles a backslash or "$HOME" in
    # a path. Plain words stay bare; others go in double quotes, backslash and quote escaped
    # (systemd.syntax(7)). A unit file must be UTF-8, a path need not be: a byte that is not UTF-8
    # (a surrogate-escaped name, ``os.fsdecode``) and a control character (a newline would end the
    # line) are written as ``\xHH``, which systemd turns back into that very byte. The command itself
    # (the first word) gets no $VAR expansion: a ``$`` there stays single.
    arg = arg.replace("%", "%%")
    if not command:
        arg = arg.replace("$", "$$")
    if arg and re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    out = []
    for ch in arg.replace("\\", "\\\\").replace('"', '\\"'):
        if "\udc80" <= ch <= "\udcff":  # an undecodable byte, as os.fsdecode keeps it
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def service_unit(home: Path, roots: list[Path], extra_args: list[str] | None = None,
                 command: list[str] | None = None) -> str:
    argv = [*(command or phototag_command()), "--home", str(home), "watch", *(extra_args or []),
            "--log-format", "json", *[str(r) for r in roots]]
    exec_start = " ".join(_systemd_quote(a, command=i == 0) for i, a in enumerate(argv))
    return (
        "[Unit]\n"
        "Description=phototag: tag new photos as they arrive\n"
        "After=local-fs.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "# SIGTERM: the batch in progress is finished and committed, then it exits\n"
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=120\n"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        "Nice=10\n"
        "IOSchedulingClass=idle\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def install_service(home: Path, roots: list[Path], extra_args: list[str] | None = None, force: bool = False,
                    environ: dict[str, str] | None = None) -> ServiceFiles:
    """Write ``~/.config/systemd/user/phototag.service`` (atomically)."""
    unit_dir = systemd_user_dir(environ)
    unit_path = unit_dir / UNIT_NAME
    text = service_unit(home, roots, extra_args)
    if unit_path.exists() and not force and unit_path.read_text(encoding="utf-8") != text:
        raise ServiceError(f"{unit_path} exists and differs; use --force to replace it")
    atomic.write_text(unit_path, text)
    return ServiceFiles(unit_path, text)
