"""Alembic migrations of the phototag library database (installed as ``phototag_migrations``)."""
