"""phototag service install|uninstall: run `phototag watch` as a systemd user service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from phototag.cli.common import console, fail, out
from phototag.config import get_settings
from phototag.watch.service import UNIT_NAME, ServiceError, install_service, systemd_user_dir

service_app = typer.Typer(help="Run `phototag watch` in the background as a systemd user service.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(service_app, name="service")


@service_app.command("install")
def install(
    roots: Optional[List[Path]] = typer.Argument(None, help="Folders to watch (default: the setting watch.roots).",
                                                 show_default=False),
    polling: bool = typer.Option(False, "--polling", help="Watch by polling (network drives)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to tag with (default: the configured default)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing, different unit file."),
) -> None:
    """Write ~/.config/systemd/user/phototag.service for this home and these folders."""
    settings = get_settings()
    roots = [Path(r).expanduser().resolve() for r in (roots or settings.get("watch.roots") or [])]
    if not roots:
        fail("no folders to watch: phototag service install ~/Pictures")
    for r in roots:
        if not r.is_dir():
            console.print(f"[yellow]warning:[/yellow] {r} is not a folder now; the service waits for it")
    extra = (["--polling"] if polling else []) + (["--model", model] if model else [])
    try:
        files = install_service(settings.home, roots, extra, force=force)
    except ServiceError as exc:
        fail(str(exc))
    out.print(f"wrote {files.unit_path}")
    out.print("start it now and at every login:")
    out.print("  systemctl --user daemon-reload")
    out.print(f"  systemctl --user enable --now {UNIT_NAME.removesuffix('.service')}")
    out.print("keep it running when you are logged out (and start it at boot):")
    out.print(f"  loginctl enable-linger {os.environ.get('USER') or '$USER'}")
    out.print(f"logs: journalctl --user -u {UNIT_NAME.removesuffix('.service')} -f   status: phototag status")


@service_app.command("uninstall")
def uninstall() -> None:
    """Remove the unit file (stop the service first: systemctl --user disable --now phototag)."""
    path = systemd_user_dir() / UNIT_NAME
    if not path.exists():
        fail(f"{path} does not exist")
    path.unlink()
    out.print(f"removed {path}")
    out.print("run: systemctl --user daemon-reload")
