"""The tag side of the library's write API (a part of :class:`phototag.library.Library`): tag rows,
manual tags and removals, imported keywords and sidecar edits, and reading a photo's tags."""

from __future__ import annotations

from typing import Iterable, Mapping

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from phototag.db import sql
from phototag.db.models import (
    ModelRun,
    Photo,
    PhotoStatus,
    PhotoTag,
    Tag,
    TagRemoval,
    TagSource,
)


class TagRows:
    """Tags, their provenance and the user's removals. Mixed into :class:`phototag.library.Library`
    (uses its ``_tag_ids`` cache and photo lookups)."""

    def ensure_tags(
        self,
        session: Session,
        names: Iterable[str],
        parents: Mapping[str, str] | None = None,
        names_zh: Mapping[str, str] | None = None,
    ) -> dict[str, int]:
        """Tag ids for ``names``, creating missing tags (and their ancestors) as needed.

        ``names_zh``: Chinese names, set on new tags and filled in on existing tags that have none (a
        library tagged before its model had Chinese names); each tag is looked at once per process."""
        parents = parents or {}
        names_zh = names_zh or {}
        wanted: list[str] = []
        for name in names:
            node, guard = name, 0
            while node and node not in wanted and guard < 64:
                wanted.append(node)
                node, guard = parents.get(node), guard + 1
        missing = [n for n in wanted if n not in self._tag_ids]
        if missing:
            for tag_id, tag_name, tag_zh in session.execute(
                    select(Tag.id, Tag.name, Tag.name_zh).where(Tag.name.in_(missing))):
                self._tag_ids[tag_name] = tag_id
                self._tag_zh[tag_name] = tag_zh

        def create(name: str, depth: int = 0) -> int:
            if name in self._tag_ids:
                return self._tag_ids[name]
            parent = parents.get(name)
            parent_id = create(parent, depth + 1) if parent and depth < 64 else None
            if name in self._tag_ids:  # a parent cycle came back round to this tag
                return self._tag_ids[name]
            # another process (a second scan, the watcher, `tag add`) may create the same tag right now:
            # insert it unless it exists, then read its id (never a UNIQUE failure)
            session.execute(sql.insert(session, Tag).values(name=name, name_zh=names_zh.get(name), parent_id=parent_id)
                            .on_conflict_do_nothing(index_elements=[Tag.name]))
            tag_id, tag_zh = session.execute(select(Tag.id, Tag.name_zh).where(Tag.name == name)).one()
            self._tag_ids[name] = tag_id
            self._tag_zh[name] = tag_zh
            return tag_id

        for name in wanted:  # parents are created before their children
            create(name)
        if names_zh:
            fill = {n: names_zh[n] for n in wanted if names_zh.get(n) and self._tag_zh.get(n) is None}
            if fill:
                self._fill_names_zh(session, fill)
        return {n: self._tag_ids[n] for n in wanted}

    def _fill_names_zh(self, session: Session, names_zh: Mapping[str, str]) -> None:
        """Set the Chinese name of these tags where they have none (one executemany)."""
        table = Tag.__table__
        session.execute(
            update(table).where(table.c.name == bindparam("b_name"), table.c.name_zh.is_(None))
            .values(name_zh=bindparam("b_zh")),
            [{"b_name": n, "b_zh": zh} for n, zh in names_zh.items()],
        )
        for name, zh in names_zh.items():
            if name in self._tag_ids:
                self._tag_zh[name] = zh

    def fill_tag_names_zh(self, session: Session, names_zh: Mapping[str, str]) -> int:
        """Give every tag without a Chinese name the one in ``names_zh`` (a model's vocabulary), e.g. in
        a library tagged before the built-in model had Chinese names. One query; returns the count."""
        if not names_zh:
            return 0
        empty = session.scalars(select(Tag.name).where(Tag.name_zh.is_(None))).all()
        fill = {n: names_zh[n] for n in empty if names_zh.get(n)}
        if fill:
            self._fill_names_zh(session, fill)
        return len(fill)

    def forget_tag_cache(self) -> None:
        self._tag_ids.clear()
        self._tag_zh.clear()

    def add_manual_tags(self, session: Session, photo: Photo, names: Iterable[str],
                        parents: Mapping[str, str] | None = None) -> list[str]:
        """User-given tags (source ``manual``). A removal of the same tag is cancelled. ``parents``:
        where new tags go in the hierarchy (child → parent)."""
        names = [n.strip() for n in names if n.strip()]
        ids = self.ensure_tags(session, names, parents)
        added = []
        for name in names:
            tag_id = ids[name]
            session.execute(delete(TagRemoval).where(TagRemoval.photo_id == photo.id, TagRemoval.tag_id == tag_id))
            exists = session.scalar(
                select(PhotoTag.id).where(
                    PhotoTag.photo_id == photo.id, PhotoTag.tag_id == tag_id, PhotoTag.source == TagSource.manual.value
                )
            )
            if exists is None:
                session.add(PhotoTag(photo_id=photo.id, tag_id=tag_id, source=TagSource.manual.value, score=1.0))
                added.append(name)
        session.flush()
        return added

    def remove_tags(self, session: Session, photo: Photo, names: Iterable[str]) -> list[str]:
        """The user says these tags are wrong: drop them (any source) and keep model runs from re-adding them."""
        removed = []
        for name in names:
            tag = session.scalar(select(Tag).where(Tag.name == name))
            if tag is None:
                continue
            rows = session.scalars(select(PhotoTag).where(PhotoTag.photo_id == photo.id, PhotoTag.tag_id == tag.id)).all()
            model_score = max((r.score or 0.0 for r in rows if r.source == TagSource.model.value), default=None)
            for row in rows:
                session.delete(row)
            if session.scalar(select(TagRemoval.id).where(TagRemoval.photo_id == photo.id, TagRemoval.tag_id == tag.id)) is None:
                session.add(TagRemoval(photo_id=photo.id, tag_id=tag.id, score=model_score))
            removed.append(name)
        session.flush()
        return removed

    def apply_sidecar_edits(
        self, session: Session, photo: Photo, added: Iterable[tuple[str, ...]] = (),
        removed: Iterable[tuple[str, ...]] = (),
    ) -> tuple[list[str], list[str]]:
        """The user's edits under phototag's root in the photo's sidecar (two-way sync, docs/sync.md),
        applied as ``tag add`` / ``tag remove`` would: each ``added`` path (tag names from the top)
        becomes a manual tag placed under its path's levels; each ``removed`` one takes its tag away
        (any source) and keeps model runs from giving it back. Returns (added names, removed names)."""
        added_names: list[str] = []
        for path in added:
            path = tuple(p.strip() for p in path if p.strip())
            if path:
                parents = {child: parent for parent, child in zip(path, path[1:])}
                added_names += self.add_manual_tags(session, photo, [path[-1]], parents)
        removed_names: list[str] = []
        for path in removed:
            path = tuple(p.strip() for p in path if p.strip())
            if not path:
                continue
            leaf = path[-1]
            if session.scalar(select(Tag.id).where(Tag.name == leaf)) is None:
                # a Chinese name phototag wrote (languages = ["zh"]); else a tag the library does not have yet
                # (a new library reading an older one's sidecar): made, so that the removal holds
                by_zh = session.scalar(select(Tag.name).where(Tag.name_zh == leaf).limit(1))
                if by_zh is not None:
                    leaf = by_zh
                else:
                    self.ensure_tags(session, [leaf], {c: p for p, c in zip(path, path[1:])})
            removed_names += self.remove_tags(session, photo, [leaf])
        return added_names, removed_names

    def set_imported_tags(self, session: Session, photo: Photo, keywords: Iterable[str]) -> None:
        """The keywords the photo (or its sidecar) already carries, as ``imported`` tags.

        ``a/b/c`` paths become tag ``c`` under ``b`` under ``a`` (for tags phototag did not know yet)."""
        leaves: list[str] = []
        parents: dict[str, str] = {}
        for keyword in keywords:
            parts = [p.strip() for p in keyword.split("/") if p.strip()]
            if not parts:
                continue
            for parent, child in zip(parts, parts[1:]):
                parents.setdefault(child, parent)
            leaves.append(parts[-1])
        session.execute(
            delete(PhotoTag).where(PhotoTag.photo_id == photo.id, PhotoTag.source == TagSource.imported.value)
        )
        if not leaves:
            return
        ids = self.ensure_tags(session, leaves, parents)
        session.add_all(
            PhotoTag(photo_id=photo.id, tag_id=ids[name], source=TagSource.imported.value, score=None)
            for name in dict.fromkeys(leaves)
        )

    def photo_tags(self, session: Session, photo_id: int) -> list[dict]:
        rows = session.execute(
            select(Tag.name, Tag.name_zh, PhotoTag.score, PhotoTag.source, ModelRun.model_name)
            .join(Tag, Tag.id == PhotoTag.tag_id)
            .outerjoin(ModelRun, ModelRun.id == PhotoTag.model_run_id)
            .where(PhotoTag.photo_id == photo_id)
            .order_by(PhotoTag.score.desc().nulls_last(), Tag.name)
        ).all()
        return [
            {"name": r.name, "name_zh": r.name_zh, "score": None if r.score is None else round(r.score, 4),
             "source": r.source, "model": r.model_name}
            for r in rows
        ]

    def photos_tags(self, session: Session, photo_ids: Iterable[int]) -> dict[int, list[dict]]:
        """:meth:`photo_tags` of many photos in a few queries (a result page of thousands of photos
        asked one by one took seconds): photo id → its tags, in the same order and form."""
        ids = list(dict.fromkeys(photo_ids))
        tags: dict[int, list[dict]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):
            rows = session.execute(
                select(PhotoTag.photo_id, Tag.name, Tag.name_zh, PhotoTag.score, PhotoTag.source, ModelRun.model_name)
                .join(Tag, Tag.id == PhotoTag.tag_id)
                .outerjoin(ModelRun, ModelRun.id == PhotoTag.model_run_id)
                .where(PhotoTag.photo_id.in_(ids[start:start + 500]))
                .order_by(PhotoTag.photo_id, PhotoTag.score.desc().nulls_last(), Tag.name)
            ).all()
            for r in rows:
                tags[r.photo_id].append(
                    {"name": r.name, "name_zh": r.name_zh, "score": None if r.score is None else round(r.score, 4),
                     "source": r.source, "model": r.model_name})
        return tags

    def tag_counts(self, session: Session) -> list[dict]:
        rows = session.execute(
            select(Tag.name, Tag.name_zh, Tag.parent_id, func.count(func.distinct(PhotoTag.photo_id)).label("n"))
            .join(PhotoTag, PhotoTag.tag_id == Tag.id)
            .join(Photo, Photo.id == PhotoTag.photo_id)
            .where(Photo.status == PhotoStatus.ok.value)
            .group_by(Tag.id)
            .order_by(func.count(func.distinct(PhotoTag.photo_id)).desc(), Tag.name)
        ).all()
        parent_names = dict(session.execute(select(Tag.id, Tag.name)).all())
        return [
            {"name": r.name, "name_zh": r.name_zh, "parent": parent_names.get(r.parent_id), "count": r.n}
            for r in rows
        ]
