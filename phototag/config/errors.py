"""The error of the settings layer."""

from __future__ import annotations

from phototag.errors import PhototagError


class ConfigError(PhototagError):
    """A settings problem the user can fix: shown as one line, exit 2."""
