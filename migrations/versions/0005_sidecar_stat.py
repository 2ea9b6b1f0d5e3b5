"""Two-way sidecar sync: what the photo's XMP sidecars looked like when phototag last read or wrote them.

* ``photos.sidecar_stat``: name, size and mtime (ns) of each sidecar of the photo (``photo.xmp``,
  ``photo.jpg.xmp``) as phototag last saw them, ``""`` when it had none. A re-scan (or the watcher)
  whose stat differs re-reads the sidecar without running the model; NULL (libraries made before this
  revision) means "never looked": the first re-scan reads each photo's sidecars once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN: SQLite adds it without copying the table
    op.add_column("photos", sa.Column("sidecar_stat", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("sidecar_stat")
