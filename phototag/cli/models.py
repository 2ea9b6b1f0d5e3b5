"""phototag models download|add|list|default|verify|benchmark: install, manage and measure RAM / RAM++ / Tag2Text packs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Column, Table

from phototag.cli.common import ListFormat, console, out, print_json
from phototag.cli.common import print_table
from phototag.config import get_settings

app = typer.Typer(help="Install and manage tagging models (RAM, RAM++, Tag2Text packs).", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")


def _file(help_text: str, required: bool = False):
    return typer.Option(
        ... if required else None, help=help_text, exists=True, dir_okay=False, readable=True,
        resolve_path=True, show_default=False,
    )


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Name to call the model by (e.g. ram_plus)."),
    checkpoint: Path = _file("Official checkpoint (.pth), e.g. ram_plus_swin_large_14m.pth.", required=True),
    tags: Path = _file("Tag list, one name per line in class order (ram_tag_list.txt / tag2text_ori_tag_list.txt).",
                       required=True),
    tags_zh: Optional[Path] = _file("Chinese tag list (RAM/RAM++: ram_tag_list_chinese.txt)."),
    thresholds: Optional[Path] = _file("Per-class thresholds (RAM/RAM++: ram_tag_list_threshold.txt); "
                                       "default 0.68 (Tag2Text: the official 0.68/0.7)."),
    vocab: Optional[Path] = _file("BERT vocab.txt (bert-base-uncased) to keep Tag2Text's captioning."),
    replace: bool = typer.Option(False, "--replace", help="Replace an existing pack of that name."),
) -> None:
    """Check an official checkpoint, convert it to a tagging-only safetensors file and install it."""
    from phototag.tagging.packs import add_pack

    settings = get_settings()
    with console.status(f"Checking and converting {checkpoint.name} …"):
        info = add_pack(settings.models_dir, name, checkpoint, tags, tags_zh, thresholds, vocab, replace=replace)
    _print_added(info, settings.default_model)


def _print_added(info, default_model: str) -> None:
    size = (info.path / "weights.safetensors").stat().st_size
    out.print(f"Added model [bold]{info.name}[/]: {info.description}")
    out.print(f"  weights {info.path / 'weights.safetensors'} ({size / 1e6:,.0f} MB, sha256 {info.weights_sha256[:16]}…)")
    if default_model != info.name:
        out.print(f"  make it the default with: phototag models default {info.name}")


class OfficialModel(str, Enum):
    ram_plus = "ram_plus"
    ram = "ram"
    tag2text = "tag2text"


@app.command("download")
def download(
    model: OfficialModel = typer.Argument(
        ..., help="ram_plus (RAM++, a 3.0 GB download), ram (5.6 GB) or tag2text (4.5 GB; tags and captions).",
        show_default=False,
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Name to call the pack by (default: the model's name).",
                                       show_default=False),
    replace: bool = typer.Option(False, "--replace", help="Replace an existing pack of that name."),
    keep_download: bool = typer.Option(False, "--keep-download",
                                       help="Keep the downloaded files in <home>/models/.downloads afterwards."),
    files_url: Optional[str] = typer.Option(
        None, "--files-url", show_default=False,
        help="Base URL (or a folder) of the tag lists, instead of the official GitHub repository at its pinned "
             "commit (also PHOTOTAG_RAM_FILES_URL). The checkpoint comes from HF_ENDPOINT (huggingface.co).",
    ),
) -> None:
    """Fetch an official checkpoint and tag files (sha256-checked, resumable) and install them like `models add`."""
    from phototag.cli import show_user_error
    from phototag.tagging.download import DownloadError, download_model

    settings = get_settings()

    def report(message: str) -> None:
        console.print(message, markup=False, highlight=False, soft_wrap=True)

    try:
        result = download_model(settings.models_dir, model.value, name, replace=replace, keep_download=keep_download,
                                files_base=files_url, report=report)
    except DownloadError as exc:
        show_user_error(exc)
        if exc.manual:
            typer.echo(exc.manual, err=True)
        raise typer.Exit(2) from None
    _print_added(result.info, settings.default_model)
    if result.kept:
        out.print(f"  downloaded files kept in {result.folder}")


@app.command("list")
def list_(fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json.")) -> None:
    """Installed models: the built-in one, every pack, fine-tuned versions and plugin taggers."""
    from phototag.tagging.packs import list_packs
    from phototag.tagging.registry import list_taggers

    settings = get_settings()
    default = settings.default_model
    rows = [{"name": "builtin", "kind": "builtin", "classes": _builtin_classes(), "captions": False,
             "default": default == "builtin",
             "description": "EfficientNet-Lite0 (ImageNet), ships with phototag", "weights_sha256": None}]
    for p in list_packs(settings.models_dir):
        rows.append({"name": p.name, "kind": p.kind, "classes": p.num_classes, "captions": p.captioning,
                     "default": default == p.name, "description": p.description, "weights_sha256": p.weights_sha256,
                     "source_sha256": p.source_sha256, "path": str(p.path)})
    listed = {r["name"] for r in rows}
    for info in list_taggers(settings):  # fine-tuned versions and plugin taggers (the registry resolves all)
        if info.name not in listed:
            rows.append({"name": info.name, "kind": info.kind, "classes": None, "captions": False,
                         "default": info.is_default, "description": info.description, "weights_sha256": None})
    if fmt == ListFormat.json:
        print_json(rows)
        return
    table = Table("", "name", "kind", Column("classes", justify="right"), "description", box=None)
    for r in rows:
        table.add_row("*" if r["default"] else "", r["name"], r["kind"],
                      "" if r["classes"] is None else str(r["classes"]), r["description"])
    print_table(table)


def _builtin_classes() -> int:
    """The built-in model's class count, from its tag table (no model, no torch)."""
    import json
    from importlib.resources import files

    table = json.loads((files("phototag.tagging") / "data" / "imagenet_tags.json").read_text(encoding="utf-8"))
    return len(table["classes"])


@app.command("default")
def default(name: str = typer.Argument(..., help="builtin, a pack, a fine-tuned version or a plugin tagger "
                                                  "(`phototag models list`).")) -> None:
    """Make NAME the model that scan/watch/retag use by default."""
    from phototag.tagging.packs import PackError
    from phototag.tagging.registry import list_taggers

    settings = get_settings()
    names = [info.name for info in list_taggers(settings)]
    if name not in names:
        raise PackError(f"no model called {name!r}; installed: {', '.join(names)}")
    settings.set_default_model(name)
    out.print(f"Default model: [bold]{name}[/]")


@app.command("verify")
def verify(name: str = typer.Argument(..., help="An installed pack's name.")) -> None:
    """Re-hash a pack's files and check them against pack.json."""
    from phototag.tagging.packs import verify_pack

    settings = get_settings()
    with console.status(f"Verifying {name} …"):
        info = verify_pack(settings.models_dir, name)
    out.print(f"{info.name}: OK ({len(info.files)} files, weights sha256 {info.weights_sha256[:16]}…)")


@app.command("benchmark")
def benchmark(
    name: Optional[str] = typer.Argument(None, help="An installed pack (default: the default model).",
                                         show_default=False),
    photos: Optional[list[Path]] = typer.Option(
        None, "--photos", help="Photos or folders to measure on (up to 8 photos; default: generated ones).",
        exists=True, resolve_path=True, show_default=False),
    rounds: int = typer.Option(1, "--rounds", min=1, max=10, help="Timed passes per candidate (the best counts)."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Measure each runtime (torch, ONNX Runtime, OpenVINO) and precision of a pack on this machine; record
    which is fastest with tags that agree with torch fp32, for backend = auto."""
    from phototag.tagging.backends.benchmark import benchmark_pack, photos_from
    from phototag.cli.common import fail
    from phototag.tagging.base import TaggerError
    from phototag.tagging.packs import list_packs, load_pack_tagger

    settings = get_settings()
    name = name or settings.default_model
    packs = [p.name for p in list_packs(settings.models_dir)]
    if name not in packs:
        fail(f"{name!r} is not an installed model pack; `models benchmark` measures RAM / RAM++ / Tag2Text packs "
             f"(installed: {', '.join(packs) or 'none'})")
    chosen = photos_from(photos) if photos else None
    if photos and not chosen:
        fail("no readable photos in " + ", ".join(map(str, photos)))
    try:
        tagger = load_pack_tagger(settings.models_dir, name, device=settings.get("device"), precision="fp32",
                                  threshold=settings.get("threshold"))
    except TaggerError as exc:
        fail(str(exc))
    with console.status(f"Benchmarking {name} …") as status:
        result = benchmark_pack(tagger, chosen, rounds=rounds, report=lambda m: status.update(f"{name}: {m}"))
    rows = [{**c.__dict__, "eligible": c.eligible} for c in result.candidates]
    choice = {"backend": result.choice.backend, "precision": result.choice.precision} if result.choice else None
    if fmt == ListFormat.json:
        print_json({"model": name, "photos": result.photos, "candidates": rows, "auto": choice,
                    "record": str(result.record), "machine": result.fingerprint})
        return
    ref = next((c.photos_per_s for c in result.candidates if c.photos_per_s > 0), 0.0)
    table = Table("backend", "precision", Column("photos/s", justify="right"), Column("× torch fp32", justify="right"),
                  Column("tags agree", justify="right"), "eligible", Column("load s", justify="right"),
                  Column("memory MiB", justify="right"), Column("export s", justify="right"), "note", box=None)
    for c in result.candidates:
        table.add_row(c.backend, c.precision, f"{c.photos_per_s:.3f}",
                      f"{c.photos_per_s / ref:.2f}" if ref else "", f"{c.jaccard:.3f}", "yes" if c.eligible else "no",
                      f"{c.load_s:.1f}", "" if c.memory_mib is None else f"{c.memory_mib:.0f}",
                      "" if c.export_s is None else f"{c.export_s:.1f}", c.note)
    out.print(f"{name} on {result.fingerprint.get('cpu')} ({result.fingerprint.get('cores')} cores), "
              f"{result.photos} photos; tags agree = mean Jaccard with torch fp32; eligible = agree ≥ 0.98 and "
              "memory within the pack's size + 1 GiB for a scan")
    print_table(table)
    if choice:
        out.print(f"backend = auto will use: [bold]{choice['backend']} {choice['precision']}[/], "
                  f"{result.choice.reason} (recorded in {result.record})")
    if settings.get("backend") != "auto":
        out.print(f"  (the backend setting is {settings.get('backend')!r}; set it to auto to use this measurement)")
