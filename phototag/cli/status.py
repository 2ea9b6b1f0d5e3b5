"""phototag status: is the watcher running, how long is the queue, what was tagged last."""

from __future__ import annotations

import typer

from phototag.cli.common import ListFormat, markup_safe, open_library, out, print_json
from phototag.watch.status import library_status


def register(app: typer.Typer) -> None:
    app.command()(status)


def status(
    ctx: typer.Context,
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", help="Text or JSON."),
) -> None:
    """Show whether `phototag watch` runs for this home, the queue, errors and the last tagged photo."""
    data = library_status(open_library(ctx))
    if fmt == ListFormat.json:
        print_json(data)
        return
    d = data["daemon"]
    if d["running"]:
        out.print("watcher: [green]running[/green]" + (f" (pid {d['pid']}, model {d['model']})" if d["pid"] else ""))
        for root in d["roots"]:
            flag = " [yellow]paused: not there (unmounted?)[/yellow]" if root.get("paused") else ""
            mode = root.get("mode", "")
            why = f": {root['why_polling']}" if root.get("why_polling") else ""
            out.print(f"  {markup_safe(str(root['path']))} ({mode}{markup_safe(why)}){flag}")
    else:
        out.print("watcher: [red]not running[/red] (start it: phototag watch FOLDER, or phototag service install)")
    q = data["queue"]
    out.print(f"queue: {q['length']} waiting" + (f", {q['retrying']} retrying" if q["retrying"] else ""))
    if q["set_aside"]:
        out.print(f"set aside: {q['set_aside']} photos that failed alone again and again (not retried until the "
                  "file, phototag or the model changes; phototag search status:error says why)")
    p = data["photos"]
    out.print(f"photos: {p['total']} ({p['ok']} ok, {p['missing']} missing, {p['errors']} errors)")
    last = data["last_tagged"]
    out.print(f"last tagged: {markup_safe(last['path'])} at {last['at']}" if last else "last tagged: —")
    out.print(f"default model: {data['model']}")
