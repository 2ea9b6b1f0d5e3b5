"""Initial library schema: photos, tags, photo_tags, model_runs, captions, embeddings.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("photo_count", sa.Integer(), nullable=False),
    )
    op.create_index("ix_model_runs_model_id", "model_runs", ["model_id"])
    op.create_table(
        "photos",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False, unique=True),
        sa.Column("root", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("mtime", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("format", sa.String(16), nullable=True),
        sa.Column("taken_at", sa.DateTime(), nullable=True),
        sa.Column("taken_at_offset", sa.String(8), nullable=True),
        sa.Column("camera_make", sa.Text(), nullable=True),
        sa.Column("camera_model", sa.Text(), nullable=True),
        sa.Column("lens", sa.Text(), nullable=True),
        sa.Column("iso", sa.Integer(), nullable=True),
        sa.Column("exposure_time", sa.Float(), nullable=True),
        sa.Column("f_number", sa.Float(), nullable=True),
        sa.Column("focal_length", sa.Float(), nullable=True),
        sa.Column("gps_lat", sa.Float(), nullable=True),
        sa.Column("gps_lon", sa.Float(), nullable=True),
        sa.Column("orientation", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("tagged_at", sa.DateTime(), nullable=True),
        sa.Column(
            "tagged_run_id", sa.Integer(), sa.ForeignKey("model_runs.id", ondelete="SET NULL"), nullable=True
        ),
    )
    op.create_index("ix_photos_sha256", "photos", ["sha256"])
    op.create_index("ix_photos_taken_at", "photos", ["taken_at"])
    op.create_index("ix_photos_status", "photos", ["status"])
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False, unique=True),
        sa.Column("name_zh", sa.Text(), nullable=True),
        sa.Column("parent_id", sa.Integer(), sa.ForeignKey("tags.id", ondelete="SET NULL"), nullable=True),
    )
    op.create_index("ix_tags_name_zh", "tags", ["name_zh"])
    op.create_index("ix_tags_parent_id", "tags", ["parent_id"])
    op.create_table(
        "photo_tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tag_id", sa.Integer(), sa.ForeignKey("tags.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column(
            "model_run_id", sa.Integer(), sa.ForeignKey("model_runs.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("photo_id", "tag_id", "source", name="uq_photo_tag_source"),
    )
    op.create_index("ix_photo_tags_photo_id", "photo_tags", ["photo_id"])
    op.create_index("ix_photo_tags_model_run_id", "photo_tags", ["model_run_id"])
    op.create_index("ix_photo_tags_tag_score", "photo_tags", ["tag_id", "score"])
    op.create_table(
        "captions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column(
            "model_run_id", sa.Integer(), sa.ForeignKey("model_runs.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("photo_id", "model_id", name="uq_caption_photo_model"),
    )
    op.create_index("ix_captions_photo_id", "captions", ["photo_id"])
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column(
            "model_run_id", sa.Integer(), sa.ForeignKey("model_runs.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("photo_id", "model_id", name="uq_embedding_photo_model"),
    )
    op.create_index("ix_embeddings_photo_id", "embeddings", ["photo_id"])
    op.create_index("ix_embeddings_model_id", "embeddings", ["model_id"])


def downgrade() -> None:
    for table in ("embeddings", "captions", "photo_tags", "tags", "photos", "model_runs"):
        op.drop_table(table)
