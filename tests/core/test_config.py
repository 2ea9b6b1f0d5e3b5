from phototag.config import load_settings


def test_defaults_file_and_env_layering(tmp_path):
    home = tmp_path / "h"
    settings = load_settings(home, environ={})
    assert settings.default_model == "builtin"
    assert settings.get("watch.stable_seconds") == 3.0
    settings.set_default_model("ram_plus")
    settings.set_value("watch.stable_seconds", 5)
    assert "default_model" in (home / "config.toml").read_text()
    again = load_settings(home, environ={})
    assert again.default_model == "ram_plus"
    assert again.get("watch.stable_seconds") == 5
    env = load_settings(home, environ={"PHOTOTAG_DEFAULT_MODEL": "tag2text", "PHOTOTAG_WATCH__STABLE_SECONDS": "7.5"})
    assert env.default_model == "tag2text"
    assert env.get("watch.stable_seconds") == 7.5


def test_home_from_environment(tmp_path):
    settings = load_settings(environ={"PHOTOTAG_HOME": str(tmp_path / "x")})
    assert settings.home == (tmp_path / "x").resolve()
    assert settings.db_path == (tmp_path / "x").resolve() / "phototag.db"


def test_broken_config_is_a_clear_error(tmp_path):
    import pytest

    from phototag.config import ConfigError

    (tmp_path / "config.toml").write_text("default_model = = 3\n")
    with pytest.raises(ConfigError, match="config.toml"):
        load_settings(tmp_path, environ={})
