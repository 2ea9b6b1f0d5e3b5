"""The model side of the library's write API (a part of :class:`phototag.library.Library`): model runs,
storing a prediction (model tags, embedding, caption) and copying them to a byte-identical photo."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from phototag.db.models import (
    Caption,
    Embedding,
    ModelRun,
    Photo,
    PhotoTag,
    TagRemoval,
    TagSource,
    utcnow,
)
from phototag.tagging.base import Prediction, Tagger


def _model_output_row(session: Session, kind: type[Embedding] | type[Caption], photo_id: int, model_id: str):
    """The photo's embedding or caption row from ``model_id`` (one per photo and model), made if absent."""
    row = session.scalar(select(kind).where(kind.photo_id == photo_id, kind.model_id == model_id))
    if row is None:
        row = kind(photo_id=photo_id, model_id=model_id)
        session.add(row)
    return row


class ModelResults:
    """Model runs and what they produce. Mixed into :class:`phototag.library.Library` (uses its tag
    rows: ``ensure_tags``)."""

    def copy_model_results(self, session: Session, photo: Photo, source: Photo, model_id: str) -> int:
        """Give ``photo`` the model tags, embedding and caption that ``source`` (the same content) got
        from ``model_id``: a byte-identical copy needs no model work. The photo keeps its own manual and
        imported tags and its removals; tags removed from ``source`` by the user are given with the
        score they had (a removal is one photo's). Returns the number of model tags given."""
        removed_here = set(session.scalars(select(TagRemoval.tag_id).where(TagRemoval.photo_id == photo.id)))
        best: dict[int, tuple[float | None, int | None]] = {}
        for tag_id, score, run_id in session.execute(
            select(PhotoTag.tag_id, PhotoTag.score, PhotoTag.model_run_id)
            .where(PhotoTag.photo_id == source.id, PhotoTag.source == TagSource.model.value)
        ):
            best[tag_id] = (score, run_id)
        for tag_id, score in session.execute(
            select(TagRemoval.tag_id, TagRemoval.score)
            .where(TagRemoval.photo_id == source.id, TagRemoval.score.is_not(None))
        ):
            best.setdefault(tag_id, (score, source.tagged_run_id))
        session.execute(
            delete(PhotoTag).where(PhotoTag.photo_id == photo.id, PhotoTag.source == TagSource.model.value)
        )
        now = utcnow()
        rows = [{"photo_id": photo.id, "tag_id": tag_id, "source": TagSource.model.value, "score": score,
                 "model_run_id": run_id, "created_at": now}
                for tag_id, (score, run_id) in best.items() if tag_id not in removed_here]
        if rows:
            session.execute(insert(PhotoTag), rows)
        for kind in (Embedding, Caption):
            theirs = session.scalar(select(kind).where(kind.photo_id == source.id, kind.model_id == model_id))
            if theirs is None:
                continue
            mine = _model_output_row(session, kind, photo.id, model_id)
            mine.model_run_id = theirs.model_run_id
            if kind is Embedding:
                mine.dim, mine.vector = theirs.dim, theirs.vector
            else:
                mine.text = theirs.text
            mine.created_at = now
        photo.tagged_at = now
        photo.tagged_run_id = source.tagged_run_id
        session.flush()
        return len(rows)

    def start_model_run(self, session: Session, tagger: Tagger) -> ModelRun:
        run = ModelRun(
            model_name=tagger.name,
            model_id=tagger.model_id,
            weights_sha256=tagger.weights_sha256,
            settings=tagger.settings(),
            started_at=utcnow(),
            photo_count=0,
        )
        session.add(run)
        session.flush()
        return run

    def finish_model_run(self, session: Session, run_id: int) -> None:
        session.execute(update(ModelRun).where(ModelRun.id == run_id).values(finished_at=utcnow()))

    def store_prediction(
        self, session: Session, photo: Photo, run: ModelRun, tagger: Tagger, prediction: Prediction
    ) -> None:
        """Replace the photo's model tags with this prediction; keep manual/imported tags and removals."""
        names = [t.name for t in prediction.tags]
        zh = {t.name: t.name_zh for t in prediction.tags if t.name_zh}
        if not zh:
            zh = dict(tagger.tag_names_zh())
        ids = self.ensure_tags(session, names, tagger.tag_parents(), zh)
        removed = set(
            session.scalars(select(TagRemoval.tag_id).where(TagRemoval.photo_id == photo.id)).all()
        )
        session.execute(
            delete(PhotoTag).where(PhotoTag.photo_id == photo.id, PhotoTag.source == TagSource.model.value)
        )
        now = utcnow()
        best: dict[int, float] = {}
        for tag in prediction.tags:
            tag_id = ids[tag.name]
            if tag_id in removed:
                continue
            best[tag_id] = max(best.get(tag_id, 0.0), float(tag.score))
        if best:  # one executemany, not an ORM object per tag (RAM can give hundreds per photo)
            session.execute(insert(PhotoTag), [
                {"photo_id": photo.id, "tag_id": tag_id, "source": TagSource.model.value, "score": score,
                 "model_run_id": run.id, "created_at": now}
                for tag_id, score in best.items()
            ])
        if prediction.embedding is not None:
            import numpy as np  # here, not at the top: search/show never store a prediction

            vector = np.ascontiguousarray(prediction.embedding, dtype="<f4")
            emb = _model_output_row(session, Embedding, photo.id, tagger.model_id)
            emb.model_run_id = run.id
            emb.dim = int(vector.shape[0])
            emb.vector = vector.tobytes()
            emb.created_at = now
        if prediction.caption is not None:
            cap = _model_output_row(session, Caption, photo.id, tagger.model_id)
            cap.model_run_id = run.id
            cap.text = prediction.caption
            cap.created_at = now
        photo.tagged_at = now
        photo.tagged_run_id = run.id
        session.execute(update(ModelRun).where(ModelRun.id == run.id).values(photo_count=ModelRun.photo_count + 1))
