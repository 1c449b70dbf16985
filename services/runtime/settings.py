"""Settings every Arrears service reads from the environment (prefix ARREARS_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARREARS_", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ARREARS_DATABASE_URL", "DATABASE_URL"),
        description="postgresql+asyncpg://… ; unset means an embedded PostgreSQL under data_dir",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset means the in-process log (one process only)"
    )
    data_dir: Path = Field(default=Path("var"), description="Where the embedded PostgreSQL keeps its data")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    max_events_per_request: int = Field(default=10_000, ge=1)
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    consumer_max_records: int = Field(default=2_000, ge=1)
    consumer_fetch_timeout_ms: int = Field(default=200, ge=1)
    producer_linger_ms: int = Field(default=5, ge=0)
    producer_timeout_s: float = Field(default=30.0, gt=0)
    outbox_batch: int = Field(default=5_000, ge=1)
    outbox_poll_ms: int = Field(default=50, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    log_level: str = "INFO"
