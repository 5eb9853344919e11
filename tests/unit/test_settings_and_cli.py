"""Issue 2: configuration validation and the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamscore.errors import ConfigError
from streamscore.settings import load_settings


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "streamscore.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        timeout=60,
    )


def test_help_lists_the_commands():
    out = _cli("--help")
    assert out.returncode == 0
    for command in ("config", "topics", "schemas"):
        assert command in out.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": ""}, "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"),
        ({"STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": "nohostport"}, "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"),
        ({"STREAMSCORE_REGISTRY__URL": "ftp://x"}, "STREAMSCORE_REGISTRY__URL"),
        ({"STREAMSCORE_LOG_LEVEL": "LOUD"}, "STREAMSCORE_LOG_LEVEL"),
    ],
)
def test_a_bad_setting_stops_the_process_naming_the_setting(env, named):
    out = _cli("config", env=env)
    assert out.returncode == 2
    assert named in out.stderr
    assert "Traceback" not in out.stderr


def test_load_settings_raises_config_error_naming_nested_setting(monkeypatch):
    monkeypatch.setenv("STREAMSCORE_KAFKA__LINGER_MS", "-5")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.setting == "STREAMSCORE_KAFKA__LINGER_MS"


def test_secrets_come_from_files(tmp_path, monkeypatch):
    (tmp_path / "streamscore_mongo").write_text('{"url": "mongodb://user:pw@db:27017"}')
    monkeypatch.setenv("STREAMSCORE_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("STREAMSCORE_MONGO__URL", raising=False)
    import importlib

    import streamscore.settings as mod

    importlib.reload(mod)
    try:
        assert mod.load_settings().mongo.url.get_secret_value() == "mongodb://user:pw@db:27017"
    finally:
        monkeypatch.delenv("STREAMSCORE_SECRETS_DIR")
        importlib.reload(mod)


def test_duplicate_source_names_are_refused():
    with pytest.raises(ConfigError):
        load_settings(sources=[{"name": "a"}, {"name": "a"}])


def test_secrets_are_masked_in_config_output():
    out = _cli("config", env={"STREAMSCORE_MONGO__URL": "mongodb://u:hunter2@h:1"})
    assert out.returncode == 0, out.stderr
    assert "hunter2" not in out.stdout
