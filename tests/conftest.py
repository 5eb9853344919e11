"""Fixtures shared by every test: settings for a unique source, and the real local stack.

Integration and fault tests talk to the stack started by `make test` (deploy/local/stack.sh up).
If it does not answer, they fail with a message saying so; they never fall back to fakes.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from streamscore.settings import Settings, load_settings


def _stack_addresses() -> list[tuple[str, int]]:
    """Kafka, registry and MongoDB addresses from the settings (env may point at another stack)."""
    from urllib.parse import urlsplit

    s = load_settings()
    host, port = s.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    registry = urlsplit(s.registry.url)
    mongo = urlsplit(s.mongo.url.get_secret_value().split(",")[0])
    return [
        (host, int(port)),
        (registry.hostname or "127.0.0.1", registry.port or 80),
        (mongo.hostname or "127.0.0.1", mongo.port or 27017),
    ]


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _answers(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def stack() -> None:
    """The real Kafka, registry and MongoDB-wire server; fail loudly when they are not up."""
    down = [f"{h}:{p}" for h, p in _stack_addresses() if not _answers((h, p))]
    if down:
        pytest.fail(f"local stack not answering on {', '.join(down)}: run `make stack-up` first")


@pytest.fixture
def make_settings(tmp_path: Any) -> Callable[..., Settings]:
    """Settings for one or more unique sources, with a private schema cache."""

    def build(*sources: str, **overrides: Any) -> Settings:
        names = list(sources) or [unique("src")]
        base: dict[str, Any] = {
            "sources": [{"name": n} for n in names],
            "registry": {"cache_dir": str(tmp_path / "schema-cache")},
            "environment": "test",
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = base[key] | value
            else:
                base[key] = value
        return load_settings(**base)

    return build
