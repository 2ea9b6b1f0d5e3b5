"""phototag retag [QUERY]: run the (new) model over photos already in the library."""

from __future__ import annotations

import contextlib
import functools
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from phototag.errors import PhototagError

from phototag.cli.common import (
    ListFormat,
    after_commit_hook,
    console,
    fail,
    markup_safe,
    open_library,
    out,
    print_json,
)


def register(app: typer.Typer) -> None:
    app.command()(retag)


def retag(
    ctx: typer.Context,
    query: Optional[List[str]] = typer.Argument(None, help="Which photos (search language; default: all).",
                                                show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model version to tag with (default: the configured default)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Run the model and report the changes, write nothing."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted re-tag."),
    abandon: bool = typer.Option(False, "--abandon", help="Drop an interrupted re-tag (photos done keep their new tags)."),
    batch_size: int = typer.Option(0, help="Photos per model batch (0 = the model's preference)."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="Report as a table or JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS",
                                      help="Tag on a Ray cluster: auto, HOST:PORT, ray://HOST:PORT, or local "
                                           "(a cluster in this process). See docs/scaling.md."),
) -> None:
    """Re-tag photos with a model version, replacing only model tags.

    Manual and imported tags and tags you removed are never touched. The photos are queued first,
    so an interrupted re-tag (crash, Ctrl-C, kill) continues with `phototag retag --resume` or by
    running the same command again. Prints which tags were added and removed, per tag and per photo.

    With --ray ADDRESS the model runs on Ray actors on the cluster (see `phototag scan --help`).
    """
    from phototag.retag import service

    lib = open_library(ctx)
    if abandon:
        dropped = service.abandon_retag(lib)
        console.print(f"dropped the interrupted re-tag ({dropped} photos were still queued)")
        return
    with contextlib.ExitStack() as stack:
        if ray is not None:
            from phototag.cluster import ClusterError, connect
            from phototag.cluster import retag as on_ray

            try:
                run = functools.partial(on_ray.retag, lib, stack.enter_context(connect(ray)))
            except ClusterError as exc:
                fail(str(exc))
        else:
            run = functools.partial(service.retag, lib)
        report = _run(run, query, model, dry_run, resume, batch_size, fmt, quiet, lib, ray)
    if fmt == ListFormat.json:
        print_json(report.as_dict())
        return
    render(report)


def _run(run, query, model, dry_run, resume, batch_size, fmt, quiet, lib, ray):
    with Progress(
        TextColumn("[bold]re-tagging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=quiet or fmt == ListFormat.json, transient=False,
    ) as bar:
        task = bar.add_task("retag", total=None)

        def progress(event: str, n: int) -> None:
            if event == "total":
                bar.update(task, total=n)
            else:
                bar.advance(task, n)

        try:
            return run(query or [], model, dry_run=dry_run, resume=resume, progress=progress,
                       batch_size=batch_size or None, on_commit=after_commit_hook(lib))
        except PhototagError as exc:  # the cluster's workers cannot tag (one line)
            if ray is None:
                raise
            fail(str(exc))


def render(report) -> None:
    verb = "would change" if report.dry_run else "changed"
    console.print(
        f"{'[yellow]dry run[/yellow]: ' if report.dry_run else ''}{report.photos} photos, "
        f"{report.retagged} re-tagged with {report.model}, {len(report.changed)} {verb}, "
        f"{len(report.skipped)} skipped, [red]{len(report.failed)} failed[/red] — {report.seconds:.1f}s"
        + (" (resumed)" if report.resumed else "")
    )
    tags = sorted(set(report.tags_added) | set(report.tags_removed),
                  key=lambda t: (-(report.tags_added.get(t, 0) + report.tags_removed.get(t, 0)), t))
    if tags:
        table = Table("tag", "+photos", "-photos", title="per tag")
        for tag in tags[:40]:
            table.add_row(markup_safe(tag), str(report.tags_added.get(tag, "")), str(report.tags_removed.get(tag, "")))
        out.print(table)
        if len(tags) > 40:
            out.print(f"… and {len(tags) - 40} more tags (--format json lists all)")
    if report.changed:
        table = Table("photo", "added", "removed", title="per photo")
        for change in report.changed[:40]:
            table.add_row(markup_safe(change.path), markup_safe(", ".join(change.added)),
                          markup_safe(", ".join(change.removed)))
        out.print(table)
        if len(report.changed) > 40:
            out.print(f"… and {len(report.changed) - 40} more photos (--format json lists all)")
    for path, why in (report.failed + report.skipped)[:20]:
        console.print(f"  [red]✗[/red] {markup_safe(path)}: {markup_safe(why)}", soft_wrap=True)
