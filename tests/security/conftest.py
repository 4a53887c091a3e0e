"""The security suite runs the real API (both databases), the real broker and real
workers, with the fixtures of the integration suites."""

from tests.integration.api.conftest import postgres_server, shared_api
from tests.integration.conftest import kafka_admin, kafka_bootstrap

__all__ = ["kafka_admin", "kafka_bootstrap", "postgres_server", "shared_api"]
