"""phototag calibrate: tune per-tag thresholds on your corrections."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from phototag.cli.common import ListFormat, agreement_table, console, open_library, out, print_json


def register(app: typer.Typer) -> None:
    app.command()(calibrate)


def calibrate(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to calibrate (default: the default model)."),
    apply: bool = typer.Option(False, "--apply", help="Write the thresholds (models/<name>/thresholds.user.json)."),
    min_corrections: int = typer.Option(3, help="Corrections of a tag needed before its threshold moves."),
    held_out: float = typer.Option(0.3, help="Fraction of corrected photos kept aside to measure agreement."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Tune per-tag thresholds from the tags you removed and added.

    Reports precision/recall (agreement with your corrections) before and after on corrected photos
    that the tuning did not see. With --apply the thresholds are saved and used by the next retag.
    """
    from phototag.learn.calibrate import calibrate as run

    lib = open_library(ctx)
    with console.status("running the model on corrected photos"):
        result = run(lib, model, apply=apply, min_corrections=min_corrections, held_out=held_out)
    if fmt == ListFormat.json:
        print_json(result.as_dict())
        return
    if not result.tuned:
        console.print(f"no tag has {min_corrections} or more corrections yet, so no threshold moved: a tag's "
                      f"threshold is tuned once you have added or removed it on at least {min_corrections} "
                      "photos (`phototag tag add|remove`, or lower --min-corrections)")
    else:
        table = Table("tag", "threshold", "yes", "no", "errors before", "errors after",
                      title=f"{result.model}: tuned tags")
        for t in result.tuned:
            table.add_row(t.tag, f"{t.threshold:.3f}", str(t.positives), str(t.negatives), str(t.errors_before),
                          str(t.errors_after))
        out.print(table)
    agreement_table(result.before, result.after, result.held_out_photos)
    if result.applied:
        console.print(f"[green]saved[/green] {len(result.applied_thresholds)} thresholds to {result.applied}; "
                      f"`phototag retag` applies them")
    else:
        console.print("nothing written (use --apply to save the thresholds)")

