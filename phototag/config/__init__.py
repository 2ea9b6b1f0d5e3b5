"""Settings: defaults < ``<home>/config.toml`` < ``PHOTOTAG_*`` environment variables.

The library home holds everything phototag owns: ``phototag.db``, the FAISS index, converted model
packs and ``config.toml``. It is ``--home`` / ``PHOTOTAG_HOME`` or, by default, the platform's user
data directory (``~/.local/share/phototag`` on Linux).

Every setting is declared exactly once, in :data:`SCHEMA`: its dotted key, type, default and a
one-line doc (``docs/configuration.md`` is checked against it). Both sources are validated when
they are loaded: a wrong value is a :class:`ConfigError` whose one line names the key, the value
and what is expected; an unknown key is refused with the nearest known one. Code that reads
``settings.get("batch_size")`` therefore always gets a value of the declared type.

Environment overrides use the dotted key with dots replaced by double underscores, upper-cased:
``PHOTOTAG_DEFAULT_MODEL=ram_plus``, ``PHOTOTAG_WATCH__STABLE_SECONDS=5``. Their text is read as
the setting's type (a list as ``["a", "b"]`` or ``a,b``; ``none`` unsets an optional setting).

``config.toml`` is written only through :meth:`Settings.set_value` / :func:`write_config_text`:
style-preserving (tomlkit keeps the user's comments and layout) and atomic (:mod:`phototag.atomic`).

The package, by job: :mod:`~phototag.config.spec` (one setting's type and checks),
:mod:`~phototag.config.schema` (the table of every setting: data), :mod:`~phototag.config.validate`
(checking a source), :mod:`~phototag.config.load` (:class:`Settings`, loading, the process's
settings), :mod:`~phototag.config.write` (config.toml, tomlkit imported only when writing). Import
from here: ``from phototag.config import Settings, get_settings, ConfigError, SCHEMA``.

A plugin's own table is ``[plugins.<name>]``. The bundled plugins' settings (``xmp``,
``digikam``) are declared here like every other setting; the table of a third-party plugin that
is installed is passed through as it is, for the plugin to check.
"""

from phototag.config.errors import ConfigError
from phototag.config.load import (
    CONFIG_NAME,
    Settings,
    default_home,
    get_settings,
    load_settings,
    resolve_home,
    use_settings,
)
from phototag.config.schema import DEFAULTS, SCHEMA, SETTINGS, TABLES, nearest_key, setting
from phototag.config.spec import Setting, show_value
from phototag.config.validate import (
    NON_SETTING_ENV,
    check_config_text,
    is_third_party_key,
    parse_value,
)
from phototag.config.write import dump_toml, set_in_config, write_config_text

__all__ = [
    "CONFIG_NAME",
    "DEFAULTS",
    "NON_SETTING_ENV",
    "SCHEMA",
    "SETTINGS",
    "TABLES",
    "ConfigError",
    "Setting",
    "Settings",
    "check_config_text",
    "default_home",
    "dump_toml",
    "get_settings",
    "is_third_party_key",
    "load_settings",
    "nearest_key",
    "parse_value",
    "resolve_home",
    "set_in_config",
    "setting",
    "show_value",
    "use_settings",
    "write_config_text",
]
