"""phototag search QUERY: find photos by tags, dates, camera, … (see docs/query.md)."""

from __future__ import annotations

import re
from typing import List, Optional

import typer
from rich.table import Column, Table

from phototag.cli.common import Format, console, markup_safe, open_library, paths_output, print_json, print_table


def register(app: typer.Typer) -> None:
    app.command()(search)


def search(
    ctx: typer.Context,
    query: List[str] = typer.Argument(None, help="Query terms, e.g.  cat ^dog taken:2019..2021 camera:fuji", show_default=False),
    fmt: Format = typer.Option(Format.paths, "--format", "-f", help="paths (one per line), table, or json."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="At most this many results."),
    print0: bool = typer.Option(False, "--print0", "-0", help="Separate paths with NUL (for xargs -0)."),
) -> None:
    """Find photos. Exits 1 when nothing matched (like grep).

    Bare words are tags (all must match); ^word excludes; a lone , between terms means OR;
    field:value filters (taken:2019..2021, camera:fuji, tag:animal/, tag:dog@0.8.., path:, iso:,
    src:manual, caption:, untagged:true); sort with taken- / taken+. Plain-language search:
    ~"dog on the beach"; similar photos: similar:PATH. Full reference: docs/query.md.
    """
    from phototag.library import search_result_as_dict
    from phototag.query import parse_query, search as run_search
    from phototag.search import default_resolvers

    from phototag.plugins import install_query_fields

    lib = open_library(ctx)
    install_query_fields(lib.settings)
    parsed = parse_query(list(query or []))
    with lib.session() as session:
        photos = run_search(session, parsed, limit=limit, resolvers=default_resolvers(lib))
        if fmt == Format.paths:
            paths_output((p.path for p in photos), print0)
        elif fmt == Format.json:
            print_json(search_result_as_dict(lib, session, photos))
        else:
            # a path is never cut short: it gets the most room, and folds when it must
            table = Table(Column("path", overflow="fold", ratio=2), Column("taken", no_wrap=True), "camera",
                          Column("tags", ratio=1))
            all_tags = lib.photos_tags(session, (p.id for p in photos))
            for p in photos:
                tags = ", ".join(t["name"] for t in all_tags[p.id][:8])
                table.add_row(markup_safe(p.path), p.taken_at.strftime("%Y-%m-%d %H:%M") if p.taken_at else "",
                              markup_safe(p.camera_model or ""), markup_safe(tags))
            print_table(table)
    if not photos:
        _explain_chinese_names(lib, parsed)
        raise typer.Exit(1)


#: CJK ideographs (and their extension A): a term written in Chinese
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _explain_chinese_names(lib, parsed) -> None:
    """Nothing matched and a Chinese term names no tag: say where Chinese names come from."""
    from phototag.query import unknown_tag_names

    with lib.session() as session:
        names = [n for n in unknown_tag_names(session, parsed) if _CJK.search(n)]
    if names:
        console.print(
            f"note: no tag in this library is named {markup_safe(', '.join(names))}; Chinese tag names come with "
            "the models that have them (RAM/RAM++: all 4585 tags; the built-in model: 455 of its 1000 classes; "
            "phototag tags lists the names in use)", soft_wrap=True, highlight=False,
        )
