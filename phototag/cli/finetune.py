"""phototag finetune: train a new tagging head on your corrections → a new model version."""

from __future__ import annotations

from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from phototag.cli.common import ListFormat, agreement_table, console, open_library, print_json


def register(app: typer.Typer) -> None:
    app.command()(finetune)


def finetune(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to start from (default: the default model)."),
    epochs: int = typer.Option(100, "--epochs", help="Passes over the corrected photos."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the new version (default: <model>-ftN)."),
    held_out: float = typer.Option(0.3, help="Fraction of corrected photos kept aside to measure agreement."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto (default: the device setting)."),
    set_default: bool = typer.Option(False, "--set-default", help="Make the new version the default model."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Fine-tune the tagging head (backbone frozen, features cached) on your corrections.

    The result is a new model version in the home, with its own weights hash: re-tag with it using
    `phototag retag --model NAME`.
    """
    from phototag.learn.finetune import finetune as run

    lib = open_library(ctx)
    with Progress(TextColumn("[bold]features"), BarColumn(), MofNCompleteColumn(), console=console,
                  disable=fmt == ListFormat.json) as bar:
        task = bar.add_task("features", total=None)

        def progress(event: str, n: int) -> None:
            bar.update(task, total=n) if event == "total" else bar.advance(task, n)

        result = run(lib, model, epochs=epochs, name=name, held_out=held_out, device=device, progress=progress)
    if set_default:
        lib.settings.set_default_model(result.name)
    if fmt == ListFormat.json:
        print_json(result.as_dict())
        return
    agreement_table(result.before, result.after, result.held_out_photos)
    console.print(f"[green]new model version[/green] {result.name} ({result.path}, weights {result.weights_sha256[:12]}…) "
                  f"trained on {result.train_photos + result.held_out_photos} photos, {result.epochs} epochs on "
                  f"{result.device} in {result.seconds:.1f}s. Re-tag with: phototag retag --model {result.name}")
