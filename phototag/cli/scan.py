"""phototag scan PATH...: tag every new or changed photo under PATH."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import List, Optional

import typer

from phototag.cli.common import (
    ListFormat,
    after_commit_hook,
    console,
    fail,
    markup_safe,
    open_library,
    print_json,
    progress_bar,
)
from phototag.errors import PhototagError
from phototag.pipeline import Pipeline
from phototag.tagging.registry import get_tagger


def register(app: typer.Typer) -> None:
    app.command()(scan)


def scan(
    ctx: typer.Context,
    paths: List[Path] = typer.Argument(..., help="Folders (or single photos) to scan.", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to tag with (default: the configured default; see `phototag models list`)."),
    batch_size: int = typer.Option(0, help="Photos per model batch (0 = the model's preference)."),
    workers: int = typer.Option(0, help="Decode threads (0 = auto: the cores are shared with the model by device)."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", help="Summary as a table or JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS",
                                      help="Tag on a Ray cluster: auto, HOST:PORT, ray://HOST:PORT, or local "
                                           "(a cluster in this process). See docs/scaling.md."),
) -> None:
    """Tag every new or changed photo under PATH.

    Unchanged photos are skipped (size + mtime, then content hash), so a re-scan does no model
    work. A moved or renamed photo keeps its tags. Another scan or the watcher running on the same
    library at the same time is no problem: each file is tagged by one of them. Photos that vanished are marked missing, never
    deleted. Unreadable files are recorded with the reason and the scan goes on.

    A PATH that does not exist is an error (exit status 2): when other PATHs exist they are still
    scanned, and nothing under the missing one is marked missing (it may be an unmounted drive).

    With --ray ADDRESS the photos are read, decoded and tagged by Ray actors on the cluster (they
    read the files from the same paths, or as `ray.path_map` maps them); this machine finds,
    classifies and stores them as in a local scan.
    """
    gone = [p for p in paths if not os.path.lexists(os.path.expanduser(p))]
    for p in gone:
        console.print(f"[red]error:[/red] {markup_safe(os.fspath(p))}: no such file or folder "
                      "(not scanned; nothing under it is marked missing)", soft_wrap=True)
    paths = [p for p in paths if p not in gone]
    if not paths:
        raise typer.Exit(2)
    lib = open_library(ctx)
    tagger = get_tagger(lib.settings, model)
    with contextlib.ExitStack() as stack:
        options = {}
        pipeline_class = Pipeline
        if ray is not None:
            from phototag.cluster import ClusterError, connect
            from phototag.cluster.pipeline import RayPipeline

            try:
                options["cluster"] = stack.enter_context(connect(ray))
            except ClusterError as exc:
                fail(str(exc))
            pipeline_class = RayPipeline
        with progress_bar("scanning", disable=quiet or fmt == ListFormat.json) as progress:
            pipeline = pipeline_class(lib, tagger, decode_workers=workers or None, batch_size=batch_size or None,
                                      progress=progress, on_commit=after_commit_hook(lib), **options)
            try:
                report = pipeline.scan(paths)
            except PhototagError as exc:  # the cluster's workers cannot tag (one line)
                if ray is None:
                    raise
                fail(str(exc))
    if fmt == ListFormat.json:
        print_json(report.as_dict())
        if gone:
            raise typer.Exit(2)
        return
    console.print(
        f"[green]{report.new} new[/green], {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.moved} moved, {report.copied} copied, {report.synced} synced, "
        f"[red]{report.failed} failed[/red], {report.missing} missing "
        f"— {report.seconds:.1f}s ({tagger.name}"
        + (f"; model load {report.load_seconds:.1f}s, {report.photos_per_second:.2f} photos/s" if report.model_photos
           else "")
        + ")"
    )
    if report.busy:
        console.print(f"  {report.busy} being tagged by another phototag process (left to it)")
    for path, error in report.errors[:20]:
        console.print(f"  [red]✗[/red] {markup_safe(str(path))}: {markup_safe(str(error))}", soft_wrap=True)
    if len(report.errors) > 20:
        console.print(f"  … and {len(report.errors) - 20} more (phototag search status:error)")
    if gone:
        raise typer.Exit(2)

