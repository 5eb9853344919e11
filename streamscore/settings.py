"""All configuration, in one tree of pydantic-settings models.

Sources, highest priority first: keyword arguments, environment (``STREAMSCORE_`` prefix, ``__``
between nested names, e.g. ``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS``), a ``.env`` file, secret files
in ``STREAMSCORE_SECRETS_DIR`` (one file per setting, named like the env variable), a TOML file
named by ``STREAMSCORE_CONFIG``, then defaults. ``load_settings`` turns every validation failure
into a :class:`ConfigError` that names the environment variable to fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streamscore.errors import ConfigError

ENV_PREFIX = "STREAMSCORE_"
REPO_ROOT = Path(__file__).resolve().parents[1]
_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id_prefix: str = "streamscore"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    linger_ms: int = Field(default=20, ge=0, le=10_000)
    batch_size_bytes: int = Field(default=512 * 1024, ge=1024)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    topic_partitions: int = Field(default=3, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=7)

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("must name at least one host:port")
        bad = [s for s in servers if not _HOSTPORT.match(s)]
        if bad:
            raise ValueError(f"not host:port: {', '.join(bad)}")
        return ",".join(servers)


class RegistrySettings(BaseModel):
    url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    username: str | None = None
    password: SecretStr | None = None
    mode: Literal["register", "require"] = "register"
    timeout_s: float = Field(default=5.0, gt=0)
    cache_dir: Path = REPO_ROOT / ".stack" / "schema-cache"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class MongoSettings(BaseModel):
    url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    database: str = Field(default="streamscore", min_length=1)
    collection: str = Field(default="predictions", min_length=1)
    write_concern: str = "1"
    timeout_ms: int = Field(default=5000, ge=100)


class HealthSettings(BaseModel):
    host: str = "127.0.0.1"
    poller_port: int = 9101
    processor_port: int = 9102
    sink_port: int = 9103
    exporter_port: int = 9104
    stall_after_s: float = Field(default=60.0, gt=0)


class SourceSettings(BaseModel):
    """One external HTTP API polled into ``raw.<name>`` by ``streamscore poll``.

    ``pagination``: ``cursor`` reads the next cursor at ``cursor_path`` in the body and sends it as
    ``cursor_param``; ``link`` follows ``Link: <url>; rel="next"``; ``page`` counts ``page_param``
    up from ``first_page``; ``offset`` sends ``offset_param``. Every kind sends ``page_size`` as
    ``limit_param``. Paths are dotted (``data.items``); an empty ``records_path`` means the body
    is the array. ``auth``: the token comes from ``token`` or the file ``token_file``. Requests
    of a source never exceed ``rate_limit_per_s`` (bursts of ``rate_limit_burst``).
    """

    model_config = {"extra": "forbid"}

    name: str = Field(default="transactions", pattern=r"^[a-z][a-z0-9_\-]{0,62}$")
    url: str = "http://127.0.0.1:8000/transactions"
    pagination: Literal["cursor", "link", "page", "offset"] = "cursor"
    records_path: str = "data"
    id_path: str = Field(default="id", min_length=1)
    time_path: str | None = "timestamp"
    cursor_path: str = Field(default="next_cursor", min_length=1)
    cursor_param: str = "cursor"
    page_param: str = "page"
    first_page: int = Field(default=1, ge=0)
    offset_param: str = "offset"
    limit_param: str = "limit"
    page_size: int = Field(default=1000, ge=1, le=100_000)
    params: dict[str, str] = Field(default_factory=dict)
    auth: Literal["none", "bearer", "api-key"] = "none"
    token: SecretStr | None = None
    token_file: Path | None = None
    api_key_header: str = "X-API-Key"
    rate_limit_per_s: float = Field(default=50.0, gt=0)
    rate_limit_burst: int = Field(default=1, ge=1)
    max_connections: int = Field(default=4, ge=1, le=100)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    total_timeout_s: float = Field(default=60.0, gt=0)
    retry_attempts: int = Field(default=6, ge=1, le=100)
    backoff_initial_s: float = Field(default=0.2, gt=0)
    backoff_cap_s: float = Field(default=30.0, gt=0)
    max_retry_after_s: float = Field(default=600.0, gt=0)
    parse_attempts: int = Field(default=3, ge=1, le=20)
    dlq_body_max_bytes: int = Field(default=64 * 1024, ge=256)
    max_record_bytes: int = Field(default=900 * 1024, ge=1024)
    """A record larger than this (encoded) goes to the DLQ (stage ``extract``, value cut to
    ``dlq_body_max_bytes``) instead of failing its page's Kafka transaction forever; keep it below
    the producer's and broker's message limits (librdkafka and Kafka default to about 1 MB)."""
    poll_interval_s: float = Field(default=1.0, gt=0)
    failure_cooldown_s: float = Field(default=30.0, gt=0)
    transactional: bool = True
    transaction_timeout_s: float = Field(default=15.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _token_when_auth(self) -> SourceSettings:
        if self.auth != "none" and self.token is None and self.token_file is None:
            raise ValueError(f"auth {self.auth!r} needs token or token_file")
        return self


_MODEL_REF = r"^[A-Za-z0-9_.\-]+:[A-Za-z0-9_.\-]+$"


class ProcessorSettings(BaseModel):
    """Clean and score agents: micro-batching and the models that score.

    Models are named ``NAME:VERSION`` and live in ``<models_dir>/<NAME>/<VERSION>/``. The candidate
    takes ``candidate_share`` of the records (stable hash of the record id); the shadow model
    scores every record into ``predictions-shadow.<source>``.
    """

    app_id: str = Field(default="streamscore-processor", pattern=r"^[A-Za-z0-9_.\-]{1,100}$")
    """Faust app id = consumer group; change it only to run an independent second pipeline."""
    clean_batch_size: int = Field(default=500, ge=1, le=100_000)
    score_batch_size: int = Field(default=500, ge=1, le=100_000)
    batch_within_s: float = Field(default=0.05, gt=0, le=60)
    models_dir: Path = REPO_ROOT / "models"
    primary_model: str = Field(default="fraud:v1", pattern=_MODEL_REF)
    candidate_model: str | None = Field(default=None, pattern=_MODEL_REF)
    candidate_share: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow_model: str | None = Field(default=None, pattern=_MODEL_REF)
    low_confidence_band: tuple[float, float] | None = None
    """Override of the cards' band [low, high] of scores deemed low-confidence."""
    inference_threads: int = Field(default=1, ge=1, le=64)
    fused: bool = True
    """With both stages in this process, clean and score in one agent on raw.<source>
    (clean.<source> is still written, same contracts and DLQ stages): one Kafka read and one Avro
    decode per record fewer than two agents joined by clean.<source> (``false``)."""
    session_timeout_s: float = Field(default=30.0, ge=6, le=300)
    """Consumer group session timeout: how soon a crashed worker's partitions move on."""
    shutdown_grace_s: float = Field(default=5.0, ge=0, le=300)
    """On stop, how long an in-flight batch may take to be delivered before it is withheld."""
    stages: list[Literal["clean", "score"]] = Field(default=["clean", "score"], min_length=1)
    """Agents this process runs; one process per stage (each with its own app_id) pipelines them."""

    @property
    def runs_fused(self) -> bool:
        """One agent cleans and scores (fused, with both stages in this process)."""
        return self.fused and set(self.stages) == {"clean", "score"}

    @property
    def input_kinds(self) -> list[Literal["raw", "clean"]]:
        """The topics (by kind) this process's consumer group reads, per source."""
        if self.runs_fused:
            return ["raw"]
        kinds: list[Literal["raw", "clean"]] = []
        if "clean" in self.stages:
            kinds.append("raw")
        if "score" in self.stages:
            kinds.append("clean")
        return kinds

    @field_validator("low_confidence_band")
    @classmethod
    def _band(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError("must be [low, high] with 0 <= low <= high <= 1")
        return value

    @model_validator(mode="after")
    def _candidate(self) -> ProcessorSettings:
        if self.candidate_share > 0 and not self.candidate_model:
            raise ValueError("candidate_share > 0 needs candidate_model")
        return self


class SinkSettings(BaseModel):
    """MongoDB sink agent: ``predictions.<source>`` → MongoDB in micro-batches.

    ``app_id`` is also the Kafka consumer group. ``max_document_bytes`` defaults to the server's
    ``maxBsonObjectSize``; a larger document goes to the DLQ (stage ``sink-data``).
    ``shutdown_grace_s`` is how long a stop waits for an in-flight batch before the process exits
    without committing it. ``write_mode``: ``upsert`` (every document a ReplaceOne upsert),
    ``insert-first`` (insert, upsert only duplicates), ``auto`` (insert-first on FerretDB, else
    upsert); ``upsert_chunk`` caps the upserts per command (default: 16 on FerretDB, which
    deadlocks at 100 in flight, 1000 on MongoDB).
    """

    app_id: str = Field(default="streamscore-sink", min_length=1)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    batch_within_s: float = Field(default=0.05, gt=0, le=60)
    """Longest wait for a batch to fill: at 0.5 s it was most of the fetch -> MongoDB latency."""
    session_timeout_s: float = Field(default=30.0, ge=6, le=300)
    """Consumer group session timeout (Faust's default is 60 s): how soon a crashed sink's
    partitions go to another member or its restart."""
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_cap_s: float = Field(default=5.0, gt=0)
    ping_interval_s: float = Field(default=2.0, gt=0)
    max_document_bytes: int | None = Field(default=None, ge=1024)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    write_mode: Literal["auto", "upsert", "insert-first"] = "auto"
    upsert_chunk: int | None = Field(default=None, ge=1, le=100_000)
    datadir: Path = REPO_ROOT / ".stack" / "faust"
    model_config = {"extra": "allow"}


class FaultRule(BaseModel):
    """When a demo-API fault fires, counted over data requests (1-based ``n``).

    Deterministic: on requests ``after + 1``, ``after + 1 + every``, ... (``burst`` requests in a
    row each time). Random: with ``probability`` (seeded by ``DemoFaults.seed``).
    """

    model_config = {"extra": "forbid"}

    every: int = Field(default=0, ge=0)
    burst: int = Field(default=1, ge=1)
    after: int = Field(default=0, ge=0)
    probability: float = Field(default=0.0, ge=0, le=1)


class DemoFaults(BaseModel):
    """Fault injection of the demo API; all off by default. The first rule that fires wins."""

    model_config = {"extra": "forbid"}

    seed: int = 0
    throttle: FaultRule = FaultRule()
    retry_after_s: int = Field(default=1, ge=0)
    retry_after_form: Literal["seconds", "http-date"] = "seconds"
    error: FaultRule = FaultRule()
    error_status: int = Field(default=503, ge=500, le=599)
    slow: FaultRule = FaultRule()
    slow_s: float = Field(default=2.0, ge=0)
    drop: FaultRule = FaultRule()
    truncate: FaultRule = FaultRule()
    overlap: FaultRule = FaultRule()
    overlap_records: int = Field(default=5, ge=1)
    repeat: FaultRule = FaultRule()
    non_object: FaultRule = FaultRule()
    missing_id: FaultRule = FaultRule()


class DemoApiSettings(BaseModel):
    """The bundled demo API (``streamscore demo-api``).

    ``backlog`` records exist at start; ``rate_per_s`` more appear every second (0 = the backlog
    only), up to ``max_records``. With ``token`` set, requests need ``Authorization: Bearer`` or
    ``X-API-Key`` with it.
    """

    model_config = {"extra": "forbid"}

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    seed: int = 42
    dirty: float = Field(default=1.0, ge=0, le=10)
    backlog: int = Field(default=10_000, ge=0)
    rate_per_s: float = Field(default=0.0, ge=0)
    max_records: int | None = Field(default=None, ge=0)
    default_page_size: int = Field(default=100, ge=1)
    max_page_size: int = Field(default=5000, ge=1)
    token: SecretStr | None = None
    faults: DemoFaults = DemoFaults()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        secrets_dir=os.environ.get(f"{ENV_PREFIX}SECRETS_DIR") or None,
    )

    environment: Literal["development", "production", "test"] = "development"
    log_format: Literal["json", "console"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    registry: RegistrySettings = RegistrySettings()
    mongo: MongoSettings = MongoSettings()
    health: HealthSettings = HealthSettings()
    sources: list[SourceSettings] = Field(default_factory=lambda: [SourceSettings()], min_length=1)
    processor: ProcessorSettings = ProcessorSettings()
    sink: SinkSettings = SinkSettings()
    demo_api: DemoApiSettings = DemoApiSettings()

    @model_validator(mode="after")
    def _unique_sources(self) -> Settings:
        names = [s.name for s in self.sources]
        if len(names) != len(set(names)):
            raise ValueError("sources: names must be unique")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            dotenv_settings,
            file_secret_settings,
        ]
        toml_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the field at ``loc`` (list indexes stay in the path)."""
    parts = [str(p).upper() for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + "__".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, or raise ConfigError naming every bad setting."""
    toml_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if toml_file and not Path(toml_file).is_file():
        raise ConfigError(f"{ENV_PREFIX}CONFIG", f"file not found: {toml_file}")
    try:
        return Settings(**overrides)
    except PydanticValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            name = env_name(loc) if loc else ENV_PREFIX + "*"
            problems.append(f"{name}: {err['msg']}")
        first = exc.errors()[0]
        name = env_name(tuple(first["loc"])) if first["loc"] else ENV_PREFIX + "*"
        detail = first["msg"] if len(problems) == 1 else "; ".join(problems)
        raise ConfigError(name, detail) from None
