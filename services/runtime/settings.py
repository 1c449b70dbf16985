"""Settings every Arrears service reads from the environment (prefix ARREARS_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
        default=None, description="host:port[,host:port]; unset keeps the log in PostgreSQL (schema eventlog)"
    )
    kafka_replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of each topic `arrears topics create` makes (3 on a cluster of three or more"
        " brokers; min.insync.replicas is then a majority of them)",
    )
    data_dir: Path = Field(default=Path("var"), description="Where the embedded PostgreSQL keeps its data")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ledger_url: str = Field(
        default="http://127.0.0.1:8080", description="Where `arrears serve dashboard` finds the ledger API"
    )
    dunning_url: str = Field(
        default="http://127.0.0.1:8081", description="Where `arrears serve dashboard` finds the dunning API"
    )
    notifier_url: str = Field(
        default="http://127.0.0.1:8082", description="Where `arrears serve dashboard` finds the notifier API"
    )
    scoring_url: str = Field(
        default="http://127.0.0.1:8083", description="Where `arrears serve dashboard` finds the scoring API"
    )
    max_events_per_request: int = Field(default=10_000, ge=1)
    ledger_state_cache: int = Field(
        default=10_000, ge=0, description="Debtor states the ledger consumer keeps decoded between batches"
    )
    dunning_case_cache: int = Field(
        default=10_000,
        ge=0,
        description="Debtors whose cases the dunning consumer keeps decoded between batches",
    )
    dunning_workers: int = Field(
        default=0,
        ge=0,
        description="Processes that decide a business day's slices beside the dunning consumer (0: none)",
    )
    scoring_model_dir: Path = Field(
        default=Path("var/scoring/model"),
        description="Where `arrears scoring train` writes the model and manifest that scoring loads",
    )
    scoring_workers: int = Field(
        default=1,
        ge=0,
        description="Processes that score a business day's chunks beside the scoring consumer (0: none)",
    )
    scoring_max_records: int = Field(
        default=10_000,
        ge=1,
        description="Records per scoring consumer batch: each debtor a batch touches is scored once, "
        "so larger batches score less often per fact",
    )
    scoring_write_off_max_days: int = Field(
        default=365, ge=1, description="Days past due after which scoring proposes a debt for write-off"
    )
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    consumer_max_records: int = Field(default=2_000, ge=1)
    consumer_fetch_timeout_ms: int = Field(default=200, ge=1)
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=30_000,
        description="How long the broker holds a consumer's fetch that finds nothing new. Lower answers "
        "end-offset (lag) requests sooner, which queue behind the fetch, at the cost of more fetches",
    )
    producer_linger_ms: int = Field(default=5, ge=0)
    producer_timeout_s: float = Field(default=30.0, gt=0)
    outbox_batch: int = Field(default=5_000, ge=1)
    outbox_poll_ms: int = Field(default=50, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] | None = Field(
        default=None, description="json or text; unset: json for `arrears serve`, text for the other commands"
    )
    ready_max_lag_records: int = Field(
        default=10_000,
        ge=0,
        description="/readyz answers 503 while the consumer is more records behind than this",
    )

    smtp_host: str = Field(default="127.0.0.1", description="Where the notifier sends email")
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    mail_from: str = "receivables@arrears.invalid"
    sms_gateway_url: str | None = Field(default=None, description="HTTP gateway for SMS and messenger")
    webhook_urls: dict[str, str] = Field(
        default_factory=dict,
        description='JSON: where agency and ERP webhooks go, e.g. {"erp": "https://…", "agency:A1": "https://…"}',
    )
    webhook_secret: SecretStr = Field(
        default=SecretStr("change-me"), description="HMAC-SHA256 key signing webhooks"
    )
    letters_dir: Path = Field(default=Path("var/letters"), description="Where letters are written as PDF")
    send_windows: Literal["honour", "ignore"] = Field(
        default="honour",
        description="ignore: send at once, outside quiet hours too (replays of history, demos, tests)",
    )
    send_attempts: int = Field(default=6, ge=1, description="Transient failures before a send is given up")
    send_lease_s: float = Field(
        default=120.0,
        gt=0,
        description="A send claimed longer ago than this by a notifier that stopped is made again (same ids)",
    )
