"""Work-queue claims that survive a crash and crash evidence that blames no healthy photo.

* ``owner`` / ``heartbeat_at``: the process working on a row ("host:pid:start-time") and when it was
  last seen alive. Two scans, or a scan and the watcher, never take the same file; a killed owner's
  claims are free again at once (same host: its pid is gone) or once its heartbeat is stale.
* ``failures``: times the photo failed while it was alone in flight (its probe process crashed, or
  the model raised on it alone); ``attempts`` keeps counting unfinished claims of any cause.
* ``set_aside_for``: the phototag version, model id and weights hash a photo was set aside for;
  it is tried again when any of them changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMNs: SQLite adds them without copying the table
    op.add_column("work_queue", sa.Column("owner", sa.Text(), nullable=True))
    op.add_column("work_queue", sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
    op.add_column("work_queue", sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("work_queue", sa.Column("set_aside_for", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("work_queue") as batch:
        for column in ("set_aside_for", "failures", "heartbeat_at", "owner"):
            batch.drop_column(column)
