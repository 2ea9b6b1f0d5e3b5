"""The learning tests start from the scanned real library that the re-tag tests use (corrections are
made on top of model tags)."""

from retag.conftest import scanned, scanned_template  # noqa: F401 - fixtures
