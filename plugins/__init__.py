"""phototag's bundled plugins, installed as the package ``phototag_plugins``.

Each subpackage is an ordinary pluggy plugin registered through the ``phototag`` entry-point group,
exactly like a third-party plugin, and is active only when enabled in ``config.toml``.
"""
