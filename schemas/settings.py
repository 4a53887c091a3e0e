"""The one typed settings object, read from ``AUDITRELAY_*`` environment variables.

Build it at an entry point (``Settings()`` in the CLI, the worker, the API) and
pass it down; library code never reads the environment. The names of contract
section 7 are part of the operator interface and are never renamed.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from auditrelay.schemas.topics import TopicNames

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Plan(BaseModel):
    """What a plan entitles a workspace to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    forwarding: bool = Field(description="may stream events to destinations")
    retention_days: int = Field(ge=1, le=3650, description="days archived events are kept")
    #: Enterprise workspaces may be given a longer retention of their own.
    extended_retention: bool = False
    #: Only plans with forwarding have destinations; the API refuses one more (409).
    max_destinations: int = Field(default=25, ge=0, le=10_000,
                                  description="most destinations a workspace may have")


DEFAULT_PLANS: dict[str, Plan] = {
    "free": Plan(forwarding=False, retention_days=7),
    "team": Plan(forwarding=False, retention_days=30),
    "business": Plan(forwarding=False, retention_days=90),
    "enterprise": Plan(forwarding=True, retention_days=365, extended_retention=True),
}

#: Ports a destination URL may name unless ``allowed_destination_ports`` says otherwise:
#: HTTPS, and the unprivileged ports, where no mail, SSH or database server listens by
#: convention. Inclusive ``(low, high)`` ranges.
DEFAULT_DESTINATION_PORTS: tuple[tuple[int, int], ...] = ((443, 443), (1024, 65535))

#: The stages a worker can run, in the order it starts them.
WORKER_STAGES: tuple[str, ...] = ("router", "archive", "delivery", "retention")
#: Stages no event waits for on its way to a receiver: a worker running only these may
#: yield the CPU (``Settings.worker_background_nice``).
BACKGROUND_STAGES: frozenset[str] = frozenset({"archive", "retention"})

#: The newest Kafka that faust-streaming, aiokafka and the suite work with; docs/kafka.md.
DEFAULT_KAFKA_VERSION = "4.4.0"


class Settings(BaseSettings):
    """Every knob of auditrelay; see the configuration table in README.md."""

    model_config = SettingsConfigDict(env_prefix="AUDITRELAY_", frozen=True, extra="ignore")

    # Contract section 7.
    kafka_bootstrap: str = Field(
        default="", description="Kafka bootstrap servers; default 127.0.0.1:{kafka_port}"
    )
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite var/")
    admin_token: SecretStr | None = Field(default=None, description="admin API token; off if unset")
    secret_key: SecretStr | None = Field(
        default=None, description="key encrypting secrets at rest; generated under var/ if unset"
    )
    allow_private_cidrs: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        default=(), description="comma-separated CIDRs exempt from the SSRF rules"
    )
    topic_prefix: str = Field(default="audit.", description="prefix of every topic name")
    batch_window_seconds: float = Field(
        default=1.0, gt=0, le=60, description="longest wait before a partial batch is sent"
    )

    # Local runtime.
    var_dir: Path = Field(default=Path("var"), description="runtime state: broker data, db, keys")
    cache_dir: Path = Field(default=Path(".cache"), description="downloaded Kafka jars")
    log_level: str = Field(default="INFO", description="log level of worker and API")

    # Observability (docs/metrics.md).
    log_format: Literal["text", "json"] = Field(
        default="text", description="log lines of worker and API: text for people, json (one "
        "object per line) for log collectors"
    )
    metrics_port: int = Field(
        default=9108, ge=0, le=65535,
        description="port of the worker's Prometheus endpoint /metrics; 0 turns it off",
    )
    metrics_address: str = Field(
        default="127.0.0.1", min_length=1, description="interface the worker's metrics endpoint "
        "listens on"
    )
    metrics_interval_seconds: float = Field(
        default=10.0, gt=0, le=3600,
        description="how often the worker reads Kafka offsets for the lag and backlog gauges",
    )

    # Plans and entitlements: JSON such as {"enterprise": {"forwarding": true,
    # "retention_days": 365, "extended_retention": true}}.
    plans: dict[str, Plan] = Field(
        default_factory=lambda: dict(DEFAULT_PLANS),
        description="plans and their entitlements (JSON object)",
    )

    # Management API.
    api_port: int = Field(default=8080, ge=1, le=65535,
                          description="port of `auditrelay api` when --port is not given")
    # Operator endpoints, off the tenant-facing port when configured (docs/api.md, metrics.md).
    api_docs: bool = Field(
        default=True, description="serve the OpenAPI document and its pages (/openapi.json, "
        "/docs, /redoc); false answers them 404",
    )
    api_metrics_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="port of the API's own Prometheus listener /metrics; unset: GET /metrics "
        "on the API's port; 0: not served at all",
    )
    api_metrics_address: str = Field(
        default="127.0.0.1", min_length=1,
        description="interface the API's own metrics listener listens on",
    )
    api_max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="largest request body the API reads; bigger ones are refused with 413",
    )
    page_session_idle_seconds: int = Field(
        default=12 * 3600, ge=60, le=30 * 86400,
        description="a settings page session unused for this long is signed out",
    )

    # Quotas and rate limits of the API (docs/api.md); each API process counts its own.
    test_send_interval_seconds: float = Field(
        default=5.0, ge=0, le=3600,
        description="least time between two test sends to one destination; 0 turns it off",
    )
    test_send_workspace_per_minute: int = Field(
        default=30, ge=1, le=10_000, description="most test sends of one workspace a minute",
    )
    auth_failures_per_minute: int = Field(
        default=10, ge=1, le=10_000,
        description="failed authentications of one client address (or one workspace) a "
        "minute before its attempts are refused with 429, for twice as long each time",
    )
    auth_lockout_max_seconds: float = Field(
        default=900.0, ge=1, le=86_400, description="longest refusal after failed "
        "authentications",
    )
    allowed_destination_ports: Annotated[tuple[tuple[int, int], ...], NoDecode] = Field(
        default=DEFAULT_DESTINATION_PORTS,
        description="ports destination URLs may name: comma-separated ports and ranges",
    )

    # Archive and retention (docs/archive.md).
    archive_batch_max_events: int = Field(
        default=2000, ge=1, le=50_000,
        description="most events the archive agent writes in one transaction",
    )
    archive_batch_seconds: float = Field(
        default=0.5, gt=0, le=60, description="longest wait before the archive writes a batch"
    )
    retention_batch_size: int = Field(
        default=5000, ge=1, le=1_000_000,
        description="most archived rows one DELETE of the retention purge removes",
    )
    retention_cron: str = Field(
        default="17 3 * * *", min_length=9,
        description="when the worker's leader runs the daily purge (cron, UTC)",
    )
    retention_default_plan: str = Field(
        default="free",
        description="plan whose retention applies to events of unknown workspaces or plans",
    )

    # Local PostgreSQL (``auditrelay postgres up``), for tests and development.
    postgres_port: int = Field(default=5433, ge=1, le=65535, description="local PostgreSQL port")

    # Local broker (``auditrelay kafka up``).
    kafka_version: str = Field(default=DEFAULT_KAFKA_VERSION, description="Apache Kafka version")
    kafka_port: int = Field(default=9092, ge=1, le=65535, description="local broker port")
    kafka_controller_port: int = Field(
        default=9093, ge=1, le=65535, description="local KRaft controller port"
    )
    kafka_heap_mb: int = Field(default=512, ge=128, le=1024, description="local broker heap")
    # Local cluster (``auditrelay kafka up --brokers 3``): node n listens on these + n - 1.
    kafka_cluster_port: int = Field(
        default=29092, ge=1, le=65535 - 16,
        description="port of the local cluster's first broker (the others follow it)",
    )
    kafka_cluster_controller_port: int = Field(
        default=29192, ge=1, le=65535 - 16,
        description="KRaft controller port of the local cluster's first node",
    )
    kafka_cluster_heap_mb: int = Field(
        default=448, ge=128, le=1024, description="heap of each local cluster node"
    )
    kafka_start_timeout_seconds: float = Field(
        default=90.0, gt=0, description="how long `kafka up` waits for the broker"
    )

    # Topics.
    topic_partitions: int = Field(
        default=6, ge=1, le=1000, description="partitions of keyed topics (parallelism)"
    )
    delivery_partitions: int = Field(
        default=12, ge=1, le=1000,
        description="partitions of the delivery and parked topics: the most delivery workers "
                    "that share the work (a destination is a key, never a partition)",
    )
    # Replication (docs/kafka.md): unset, resolved from the cluster's broker count when
    # topics are created (schemas.topics.resolve_replication): 3 and 2 on three or more
    # brokers, 1 and 1 below.
    topic_replication_factor: int | None = Field(
        default=None, ge=1, le=16,
        description="replicas of each topic; default 3 on a cluster of 3+ brokers, else 1",
    )
    topic_min_insync_replicas: int | None = Field(
        default=None, ge=1, le=16,
        description="min.insync.replicas of each topic; default 2 on a cluster of 3+ "
                    "brokers, else 1",
    )

    # Delivery (contract section 2).
    delivery_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="TCP+TLS connect timeout of one delivery attempt"
    )
    delivery_request_timeout_seconds: float = Field(
        default=15.0, gt=0, le=300, description="deadline of one whole delivery attempt"
    )
    delivery_response_body_cap_bytes: int = Field(
        default=64 * 1024, ge=0, le=16 * 1024 * 1024,
        description="most bytes of a receiver's response body that are read",
    )

    # Worker.
    worker_stages: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("router", "archive", "delivery", "retention"),
        description="what `auditrelay worker` runs (comma-separated): router, archive, "
                    "delivery, retention",
    )

    worker_background_nice: int = Field(
        default=10, ge=0, le=19,
        description="niceness a worker adds to itself when all its stages are background "
                    "ones (archive, retention), so that on a shared host the router and "
                    "delivery get the CPU first; 0 leaves the priority as started",
    )

    # Pipeline.
    batch_max_events: int = Field(default=100, ge=1, le=100,
                                  description="most events in one delivered batch")
    retry_schedule_seconds: Annotated[tuple[float, ...], NoDecode] = Field(
        default=(10, 60, 300, 1800, 7200, 18000, 36000),
        description="waits before retries 1, 2, ... (comma-separated seconds; the last repeats)",
    )
    retry_jitter: float = Field(default=0.2, ge=0, lt=1, description="retry wait jitter, +/-")
    retry_give_up_seconds: float = Field(
        default=72 * 3600, gt=0,
        description="after this long since the first attempt a batch is dead-lettered",
    )
    consumer_session_timeout_seconds: float = Field(
        default=10.0, ge=6, le=300,
        description="how long a silent worker keeps its partitions before the group rebalances",
    )

    # Event envelope.
    event_type_prefix: str = Field(default="pro.atmos", description="prefix of event types")
    source_base_url: str = Field(
        default="https://app.atmos.pro", description="base of the CloudEvents source"
    )
    allow_unknown_event_types: bool = Field(
        default=False, description="accept event types outside the catalogue (docs/events.md)"
    )

    @field_validator("allow_private_cidrs", mode="before")
    @classmethod
    def _split_cidrs(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(ipaddress.ip_network(part.strip(), strict=False)
                         for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_destination_ports", mode="before")
    @classmethod
    def _split_ports(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        ranges = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            low, _, high = part.partition("-")
            if not (low.strip().isdigit() and (not high or high.strip().isdigit())):
                raise ValueError(f"{part!r} is not a port or a range such as 1024-65535")
            ranges.append((int(low), int(high or low)))
        return tuple(ranges)

    @field_validator("allowed_destination_ports")
    @classmethod
    def _valid_ports(cls, value: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        if not value:
            raise ValueError("needs at least one port")
        for low, high in value:
            if not 1 <= low <= high <= 65535:
                raise ValueError(f"{low}-{high} is not a range of ports within 1-65535")
        return value

    @field_validator("admin_token", "secret_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # docker-compose passes `${VAR:-}` through as an empty string: that means unset.
        return None if value == "" else value

    @field_validator("worker_stages", mode="before")
    @classmethod
    def _split_stages(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("worker_stages")
    @classmethod
    def _known_stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - set(WORKER_STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(WORKER_STAGES)}")
        if not value:
            raise ValueError("needs at least one stage")
        # Faust's consumer needs a topic, and retention's leader election needs Faust.
        if "retention" in value and not {"router", "archive"} & set(value):
            raise ValueError("retention runs only beside router or archive")
        return tuple(stage for stage in WORKER_STAGES if stage in value)

    @field_validator("retry_schedule_seconds", mode="before")
    @classmethod
    def _split_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_schedule_seconds")
    @classmethod
    def _positive_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v <= 0 for v in value):
            raise ValueError("needs at least one wait, each above 0 seconds")
        return value

    @field_validator("retention_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression such as '17 3 * * *'")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _fill_derived(self) -> Settings:
        # Derived defaults depend on other fields, so they cannot be plain defaults;
        # the model is frozen, hence object.__setattr__ during validation only.
        if not self.kafka_bootstrap:
            object.__setattr__(self, "kafka_bootstrap", f"127.0.0.1:{self.kafka_port}")
        if not self.database_url:
            db = (self.var_dir / "auditrelay.db").resolve()
            object.__setattr__(self, "database_url", f"sqlite:///{db}")
        if self.kafka_port == self.kafka_controller_port:
            raise ValueError("kafka_port and kafka_controller_port must differ")
        if (self.topic_replication_factor is not None and self.topic_min_insync_replicas
                is not None and self.topic_min_insync_replicas > self.topic_replication_factor):
            raise ValueError("topic_min_insync_replicas cannot exceed topic_replication_factor: "
                             "no write could ever be acknowledged")
        return self

    @model_validator(mode="after")
    def _known_default_plan(self) -> Settings:
        if self.retention_default_plan not in self.plans:
            raise ValueError(f"retention_default_plan {self.retention_default_plan!r} is not "
                             f"one of the plans ({', '.join(sorted(self.plans))})")
        return self

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)
