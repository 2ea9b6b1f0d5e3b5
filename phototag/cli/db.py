"""phototag db status|upgrade: the library database's schema revision."""

from __future__ import annotations

import typer

from phototag.cli.common import ListFormat, out, print_json
from phototag.config import get_settings
from phototag.db.engine import describe, head_revision, is_url, library_target, open_database

app = typer.Typer(help="Library database: schema revision and upgrades.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")


@app.command()
def status(fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f")) -> None:
    """Show the database path, its revision and the head revision of this phototag."""
    settings = get_settings()
    target = library_target(settings)
    exists = is_url(target) or target.exists()
    current = None
    pending: list[str] = []
    if exists:
        db = open_database(target, upgrade=False)
        current, pending = db.current_revision(), db.pending_revisions()
        db.dispose()
    data = {"path": describe(target), "exists": exists, "revision": current, "head": head_revision(),
            "pending": pending, "up_to_date": exists and not pending}
    if fmt == ListFormat.json:
        print_json(data)
        return
    out.print(f"database  {data['path']}{'' if exists else ' (not created yet)'}")
    out.print(f"revision  {current or '-'}")
    out.print(f"head      {data['head']}")
    out.print("status    " + ("up to date" if data["up_to_date"] else f"pending: {', '.join(pending) or 'create'}"))


@app.command()
def upgrade() -> None:
    """Upgrade the database to the head revision (a SQLite library is backed up first; back up a
    PostgreSQL library with pg_dump before)."""
    settings = get_settings()
    target = library_target(settings)
    db = open_database(target, upgrade=False)
    before = db.current_revision()
    backup = db.upgrade()
    after = db.current_revision()
    db.dispose()
    if before == after:
        out.print(f"already at {after}")
    else:
        note = f"; backup: {backup}" if backup else ("" if not is_url(target) or before is None
                                                      else " (no backup made on a server database: pg_dump it first)")
        out.print(f"upgraded {before or '(new)'} → {after}{note}")
