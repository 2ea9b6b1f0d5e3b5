"""The daemon's persistent work queue, the user's tag removals, and per-photo export state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_queue",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False, unique=True),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "tag_removals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tag_id", sa.Integer(), sa.ForeignKey("tags.id", ondelete="CASCADE"), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("photo_id", "tag_id", name="uq_tag_removal"),
    )
    op.create_index("ix_tag_removals_photo_id", "tag_removals", ["photo_id"])
    op.create_table(
        "export_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("photo_id", sa.Integer(), sa.ForeignKey("photos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("exporter", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("exported_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("photo_id", "exporter", name="uq_export_photo_exporter"),
    )
    op.create_index("ix_export_state_photo_id", "export_state", ["photo_id"])


def downgrade() -> None:
    for table in ("export_state", "tag_removals", "work_queue"):
        op.drop_table(table)
