"""StreamConfig: defaults, sources and their priority, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient_stream.config import StreamConfig
from resilient_stream.errors import ConfigError


def test_defaults_have_no_infinite_timeout() -> None:
    cfg = StreamConfig()
    for name in ("connect_timeout", "first_token_timeout", "idle_timeout", "total_timeout"):
        value = getattr(cfg, name)
        assert 0 < value < 3600, name


def test_kwargs_override_env_which_overrides_file(tmp_path: Path) -> None:
    toml = tmp_path / "resilient_stream.toml"
    toml.write_text("idle_timeout = 1.0\nmax_attempts = 2\nconnect_timeout = 3.0\n")
    env = {"RESILIENT_STREAM_IDLE_TIMEOUT": "4.5", "RESILIENT_STREAM_MAX_ATTEMPTS": "5"}
    cfg = StreamConfig.load(toml, env=env, max_attempts=9)
    assert cfg.connect_timeout == 3.0  # file only
    assert cfg.idle_timeout == 4.5  # env beats file
    assert cfg.max_attempts == 9  # kwarg beats env


def test_pyproject_tool_table_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.resilient_stream]\nhttp2 = false\n'
    )
    monkeypatch.chdir(tmp_path)
    assert StreamConfig.load(env={}).http2 is False


def test_resilient_stream_toml_wins_over_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.resilient_stream]\nmax_connections = 3\n")
    (tmp_path / "resilient_stream.toml").write_text("max_connections = 7\n")
    monkeypatch.chdir(tmp_path)
    assert StreamConfig.load(env={}).max_connections == 7


def test_env_strings_are_converted() -> None:
    cfg = StreamConfig.load(
        env={"RESILIENT_STREAM_HTTP2": "false", "RESILIENT_STREAM_MAX_CONNECTIONS": "4"}
    )
    assert cfg.http2 is False
    assert cfg.max_connections == 4


def test_unknown_key_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "resilient_stream.toml"
    toml.write_text("idle_timout = 3\n")
    with pytest.raises(ConfigError, match="idle_timout") as info:
        StreamConfig.load(toml, env={})
    assert info.value.key == "idle_timout"
    assert "TOML" in str(info.value)


def test_wrong_type_names_key_and_expected_type() -> None:
    with pytest.raises(ConfigError, match=r"'max_connections'.*expects int") as info:
        StreamConfig.load(env={"RESILIENT_STREAM_MAX_CONNECTIONS": "many"})
    assert "RESILIENT_STREAM_MAX_CONNECTIONS" in str(info.value)


def test_constructor_validates_types_too() -> None:
    with pytest.raises(ConfigError, match="idle_timeout"):
        StreamConfig(idle_timeout="soon")  # type: ignore[arg-type]


def test_negative_values_are_rejected() -> None:
    with pytest.raises(ConfigError, match="pool_timeout"):
        StreamConfig(pool_timeout=-1.0)


def test_literal_choice_is_checked() -> None:
    with pytest.raises(ConfigError, match="one of"):
        StreamConfig.load(env={}, log_level="loud")


def test_replace_validates_and_keeps_other_values() -> None:
    cfg = StreamConfig(max_attempts=3).replace(idle_timeout=2.0)
    assert (cfg.max_attempts, cfg.idle_timeout) == (3, 2.0)
    with pytest.raises(ConfigError, match="nope"):
        cfg.replace(nope=1)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        StreamConfig.load(tmp_path / "absent.toml", env={})


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "resilient_stream.toml"
    bad.write_text("idle_timeout = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        StreamConfig.load(bad, env={})
