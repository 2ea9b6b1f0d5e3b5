"""phototag tag add|remove|list: correct a photo's tags by hand (corrections teach calibrate/finetune)."""

from __future__ import annotations

from typing import List, Optional

import typer

from phototag.cli.common import (
    ListFormat,
    console,
    fail,
    markup_safe,
    open_library,
    out,
    print_json,
    tag_table,
    tell_plugins,
)

tag_app = typer.Typer(help="Add, remove or list a photo's tags by hand.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(tag_app, name="tag")


def _targets(lib, session, args: list[str], query: Optional[str]) -> tuple[list, list[str]]:
    """(photos, tag names): with --query every argument is a tag, else the first is the photo."""
    if query is not None:
        from phototag.db.models import Photo
        from phototag.query.service import parse_query, search_ids

        ids = search_ids(session, parse_query(query))
        photos = list(lib.iter_photos(session, ids))
        return [p for p in photos if isinstance(p, Photo)], args
    if len(args) < 2:
        raise typer.BadParameter("give a PHOTO and at least one TAG (or --query QUERY TAG…)")
    return [lib.resolve_photo(session, args[0])], args[1:]


@tag_app.command("add")
def add(
    ctx: typer.Context,
    args: List[str] = typer.Argument(..., metavar="PHOTO TAG...", help="A photo (path, #ID or sha256 prefix) then tags.",
                                     show_default=False),
    query: Optional[str] = typer.Option(None, "--query", "-q", help="Tag every photo this search finds; then all arguments are tags."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Add tags by hand (source manual). A model never removes them; a removal of the same tag is undone."""
    lib = open_library(ctx)
    result = []
    with lib.session() as session:
        photos, names = _targets(lib, session, args, query)
        for photo in photos:
            result.append({"id": photo.id, "path": photo.path, "added": lib.add_manual_tags(session, photo, names)})
    _after_commit(lib, result, "added")
    _report(result, "added", fmt)


@tag_app.command("remove")
def remove(
    ctx: typer.Context,
    args: List[str] = typer.Argument(..., metavar="PHOTO TAG...", help="A photo (path, #ID or sha256 prefix) then tags.",
                                     show_default=False),
    query: Optional[str] = typer.Option(None, "--query", "-q", help="Untag every photo this search finds; then all arguments are tags."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Remove tags (any source). Re-tagging will not give a removed tag back.

    A tag that the photo does not have is a mistake (a typo, another photo): nothing is changed and the
    command exits 2, naming it. With --query, only a tag that none of the found photos has is one."""
    lib = open_library(ctx)
    result = []
    with lib.session() as session:
        photos, names = _targets(lib, session, args, query)
        present = {photo.id: {t["name"] for t in lib.photo_tags(session, photo.id)} for photo in photos}
        if query is None:
            photo = photos[0]
            absent = [n for n in names if n not in present[photo.id]]
            if absent:
                have = ", ".join(sorted(present[photo.id])) or "none"
                fail(f"{photo.path} has no tag {', '.join(map(repr, absent))}; nothing removed (its tags: {have})")
        else:
            anywhere = set().union(*present.values()) if present else set()
            absent = [n for n in names if n not in anywhere]
            if absent:
                fail(f"none of the {len(photos)} photos found by {query!r} has the tag "
                     f"{', '.join(map(repr, absent))}; nothing removed")
        for photo in photos:
            wanted = [n for n in names if n in present[photo.id]]
            removed = lib.remove_tags(session, photo, wanted) if wanted else []
            result.append({"id": photo.id, "path": photo.path, "removed": removed})
    _after_commit(lib, result, "removed")
    _report(result, "removed", fmt)


def _after_commit(lib, result: list[dict], key: str) -> None:
    """The photos whose tags changed go through the after-commit hooks scan and watch call (with
    ``[export] auto``, their sidecars are written now, not at the next export)."""
    changed = [r["id"] for r in result if r[key]]
    if changed:
        tell_plugins(lib, changed)


def _report(result: list[dict], key: str, fmt: ListFormat) -> None:
    if fmt == ListFormat.json:
        print_json(result)
        return
    changed = [r for r in result if r[key]]
    for r in changed[:50]:
        out.print(f"{markup_safe(r['path'])}: {key} {markup_safe(', '.join(r[key]))}")
    console.print(f"{key} tags on {len(changed)} of {len(result)} photos")


@tag_app.command("list")
def list_(
    ctx: typer.Context,
    photo: str = typer.Argument(..., help="A photo path, #ID, or sha256 prefix.", show_default=False),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """A photo's tags with score, source (model/manual/imported) and model, plus the tags you removed."""
    from sqlalchemy import select

    from phototag.db.models import Tag, TagRemoval

    lib = open_library(ctx)
    with lib.session() as session:
        p = lib.resolve_photo(session, photo)
        tags = lib.photo_tags(session, p.id)
        removed = list(session.scalars(
            select(Tag.name).join(TagRemoval, TagRemoval.tag_id == Tag.id).where(TagRemoval.photo_id == p.id).order_by(Tag.name)
        ))
        path = p.path
    if fmt == ListFormat.json:
        print_json({"path": path, "tags": tags, "removed": removed})
        return
    out.print(tag_table(tags, title=path, chinese=False))
    if removed:
        out.print(f"removed by you: {markup_safe(', '.join(removed))}")
