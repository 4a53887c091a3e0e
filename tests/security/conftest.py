"""The security suite runs the real API (both databases), the real broker and real
workers, with the fixtures of the integration suites."""

from tests.integration.api.conftest import (
    database_url,
    db_kind,
    make_api,
    postgres_server,
    shared_api,
)
from tests.integration.conftest import kafka_admin, kafka_bootstrap

__all__ = ["database_url", "db_kind", "kafka_admin", "kafka_bootstrap", "make_api",
           "postgres_server", "shared_api"]
