"""Indexes for search at a million photos.

* photo_tags(tag_id, photo_id): a tag's posting list without touching the table rows
  (3-term tag queries went from over 2 s to ~0.1 s at 1M photos in bench/bench_search.py);
* embeddings(model_id, created_at): the FAISS index's up-to-date check reads the index, not the
  2 GB of vectors (20 s → 0.2 s at 1M).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_photo_tags_tag_photo", "photo_tags", ["tag_id", "photo_id"])
    op.create_index("ix_embeddings_model_created", "embeddings", ["model_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_embeddings_model_created", "embeddings")
    op.drop_index("ix_photo_tags_tag_photo", "photo_tags")
