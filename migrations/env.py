"""Alembic environment: phototag always passes an open connection (see phototag.db.engine)."""

from alembic import context

from phototag.db.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # pragma: no cover - only when someone runs the alembic CLI directly
        raise SystemExit("use `phototag db upgrade` (phototag passes the database connection)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: batch mode copies tables
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
