"""Fixtures of the management API suite: real servers, real databases, real broker.

Every API test runs twice, on SQLite (a file under the test's tmp dir) and on
PostgreSQL (the project's local server, one fresh database per test or module).
The app is served by uvicorn on 127.0.0.1 in a background thread and called with
``httpx.Client`` over real HTTP. Names resolve through a ``FakeResolver`` the test
controls, so nothing outside loopback is ever looked up or connected to.

- ``api``: a fresh app and database per test, publishing its outbox to the real
  broker under a topic prefix unique to the test (topics deleted afterwards).
- ``shared_api``: one app per module and database kind, outbox not published;
  for table-driven tests, each of which works in a workspace of its own.
- ``make_api``: builds servers with other options (CA-trusting TLS context,
  allowed private CIDRs, admin token off, ...) inside a test.
- ``receiver``: an HTTPS receiver (``tests.support.servers.Receiver``) on 127.0.0.1
  whose trustme certificate is for ``RECEIVER_HOST``, a made-up name the resolver
  maps to 127.0.0.1; ``at_receiver_host`` serves any app (a vendor's fake) so.
- For the destination kinds' modules: ``vendor_api`` (an app that knows a vendor's
  names and allows loopback), ``ApiServer.post_destination`` / ``send_test`` /
  ``assert_never_shown``, and ``refused_naming`` (a 422 naming a field).
"""

from __future__ import annotations

import ipaddress
import ssl
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from sqlalchemy import func, select

from auditrelay.api.app import create_app
from auditrelay.kafka.admin import create_topics
from auditrelay.ops.postgres_local import LocalPostgres
from auditrelay.schemas.errors import ProvisioningError
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import TopicNames, static_topic_specs
from auditrelay.store.db import Destination, OutboxEntry
from auditrelay.store.engine import Store, upgrade_database
from auditrelay.wire.secrets import box_from_settings
from tests.support.cleanup import topics_cleaned_up
from tests.support.servers import Receiver, Server, serve
from tests.support.services import start_once
from tests.support.settings import make_settings
from tests.unit.wire.test_ssrf import NAMES as SSRF_NAMES
from tests.unit.wire.test_ssrf import FakeResolver

DB_KINDS = ["sqlite", "postgresql"]
RECEIVER_HOST = "siem.receiver.example"
#: Names the suite's resolver knows; everything else does not resolve.
NAMES: dict[str, Sequence[str]] = {**SSRF_NAMES, RECEIVER_HOST: ["127.0.0.1"]}
# 32+ characters: the API refuses a shorter admin token (api/tokens.py).
ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def make_resolver() -> FakeResolver:
    return FakeResolver(NAMES)


def refused_naming(result: tuple[int, dict[str, Any]], field: str) -> str:
    """The message of a ``post_destination`` answered 422 naming ``field`` first."""
    status, answer = result
    assert status == 422, answer
    message: str = answer["error"]["message"]
    assert message.startswith(f"{field}:"), message
    return message


def error_of(response: httpx.Response) -> dict[str, str]:
    """The ``{"code", "message"}`` of an error response, checking the contract's shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return dict(body["error"])


# -- databases ---------------------------------------------------------------------------


@dataclass
class SessionPostgres:
    """The session's PostgreSQL, or why it could not start: told once, not per test."""

    server: LocalPostgres | None = None
    error: str = ""
    told: bool = False

    def __call__(self) -> LocalPostgres:
        if self.server is not None:
            return self.server
        if self.told:
            pytest.skip("PostgreSQL did not start (see the first PostgreSQL test's failure)")
        self.told = True
        pytest.fail(self.error, pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> SessionPostgres:
    """The project's local PostgreSQL; stopped at the end only if this session started it.

    If it cannot start, the first test that needs it fails with the one-line reason
    and the others are skipped, instead of a screenful of identical errors each.
    """
    server = LocalPostgres.from_settings(Settings())
    try:
        start_once("postgres", server.up)  # stopped by tests/conftest.py at the session's end
    except ProvisioningError as exc:
        return SessionPostgres(error=f"PostgreSQL cannot start: {exc}")
    return SessionPostgres(server)


@contextmanager
def fresh_database(kind: str, folder: Path,
                   postgres: Callable[[], SessionPostgres]) -> Iterator[str]:
    """The URL of an empty database of ``kind``, dropped (PostgreSQL) afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'api.db'}"
        return
    with postgres()().temporary_database("test_api") as url:
        yield url


# -- the server --------------------------------------------------------------------------


@dataclass
class ApiServer:
    """One running app: its base URL, settings, store and an HTTP client."""

    base_url: str
    settings: Settings
    app: FastAPI
    resolver: FakeResolver
    http: httpx.Client
    admin_token: str | None
    responses: list[httpx.Response] = field(default_factory=list)

    @property
    def store(self) -> Store:
        store: Store = self.app.state.store
        return store

    def call(self, method: str, path: str, token: str | None = None,
             **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = self.http.request(method, path, headers=headers, **kwargs)
        self.responses.append(response)
        return response

    def create_workspace(self, plan: str = "enterprise", name: str = "Acme") -> tuple[str, str]:
        """A new workspace's ``(id, token)``."""
        response = self.call("POST", "/v1/workspaces", self.admin_token,
                             json={"name": name, "plan": plan})
        assert response.status_code == 201, response.text
        body = response.json()
        return body["id"], body["token"]

    def create_destination(self, ws: str, token: str, **body: Any) -> dict[str, Any]:
        status, created = self.post_destination(
            ws, token, **{"name": "SIEM", "url": "https://siem.example.com/ingest", **body})
        assert status == 201, created
        return created

    def post_destination(self, ws: str, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
        """POST ``body`` as a destination of ``ws``: the status and the JSON answer."""
        response = self.call("POST", f"/v1/workspaces/{ws}/destinations", token, json=body)
        answer: dict[str, Any] = response.json()
        return response.status_code, answer

    def send_test(self, ws: str, token: str, dest: str) -> dict[str, Any]:
        """A test send to destination ``dest``: its report (the call itself must be 200)."""
        response = self.call("POST", f"/v1/workspaces/{ws}/destinations/{dest}/test", token)
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        return report

    def assert_never_shown(self, *secrets: str) -> None:
        """No response this server gave so far holds any of ``secrets``."""
        for response in self.responses:
            for secret in secrets:
                assert secret not in response.text, response.request.url

    def outbox_count(self) -> int:
        with self.store.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(OutboxEntry)) or 0)

    def destination_row(self, dest_id: str) -> Destination | None:
        with self.store.transaction() as session:
            return session.get(Destination, dest_id)


@contextmanager
def running_api(database_url: str, tmp: Path, *, kafka: tuple[str, str] | None = None,
                admin_token: str | None = ADMIN_TOKEN, **options: Any,
                ) -> Iterator[ApiServer]:
    """A served app on ``database_url``; ``kafka=(bootstrap, prefix)`` publishes its outbox.

    The database is upgraded first, as ``auditrelay db upgrade`` does before an API starts.
    """
    settings_overrides: dict[str, Any] = options.pop("settings", {})
    resolver = options.pop("resolver", None) or make_resolver()
    settings = make_settings(
        tmp, kafka[0] if kafka else "127.0.0.1:9092",
        kafka[1] if kafka else f"test.unpublished.{uuid.uuid4().hex[:8]}.",
        database_url=database_url, admin_token=admin_token, **settings_overrides)
    upgrade_database(database_url, box=box_from_settings(settings))
    app = create_app(settings, resolver=resolver, publish=kafka is not None, **options)
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=30.0) as client:
        yield ApiServer(base_url=base_url, settings=settings, app=app, resolver=resolver,
                        http=client, admin_token=admin_token)


@contextmanager
def kafka_prefix(admin: AdminClient, prefix: str) -> Iterator[None]:
    """The topics the outbox writes records to exist under ``prefix``; all are deleted after."""
    names = TopicNames(prefix=prefix)
    specs = [s for s in static_topic_specs(names, 1) if s.name in (names.events,
                                                                   names.destinations)]
    with topics_cleaned_up(admin, names):
        create_topics(admin, specs)
        yield


MakeApi = Callable[..., ApiServer]


@pytest.fixture(params=DB_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(db_kind: str, tmp_path: Path,
                 request: pytest.FixtureRequest) -> Iterator[str]:
    with fresh_database(db_kind, tmp_path,
                        lambda: request.getfixturevalue("postgres_server")) as url:
        yield url


@pytest.fixture
def make_api(database_url: str, tmp_path: Path, request: pytest.FixtureRequest,
             unique_name: str) -> Iterator[MakeApi]:
    """Starts API servers on this test's database; ``publish=True`` uses the real broker.

    Several servers made in one test share the database, each stopped at the end.
    """
    with ExitStack() as stack:
        count = 0

        def make(*, publish: bool = False, **options: Any) -> ApiServer:
            nonlocal count
            count += 1
            kafka = None
            if publish:
                bootstrap = request.getfixturevalue("kafka_bootstrap")
                admin = request.getfixturevalue("kafka_admin")
                prefix = f"test.{unique_name}.{count}."
                stack.enter_context(kafka_prefix(admin, prefix))
                kafka = (bootstrap, prefix)
            return stack.enter_context(running_api(database_url, tmp_path / f"var{count}",
                                                   kafka=kafka, **options))

        yield make


@pytest.fixture
def api(make_api: MakeApi) -> ApiServer:
    """A fresh app and database for this test, publishing to the real broker."""
    return make_api(publish=True)


@contextmanager
def module_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               name: str = "api", **options: Any) -> Iterator[ApiServer]:
    """An unpublished app (``running_api`` ``options``) on a fresh database of the kind
    ``request.param``: for a module-scoped fixture parametrized by ``DB_KINDS``."""
    tmp = tmp_path_factory.mktemp(f"{name}-{request.param}")
    with fresh_database(str(request.param), tmp,
                        lambda: request.getfixturevalue("postgres_server")) as url, \
            running_api(url, tmp / "var", **options) as server:
        yield server


@pytest.fixture(scope="module", params=DB_KINDS)
def shared_api(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One unpublished app per module and database kind; tests use workspaces of their own."""
    with module_api(request, tmp_path_factory) as server:
        yield server


@contextmanager
def vendor_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               name: str, vendor_names: Mapping[str, Sequence[str]]) -> Iterator[ApiServer]:
    """``module_api`` whose resolver also knows a vendor's names (mapped to a public
    address: nothing connects to them) and that allows 127.0.0.0/8, so that a fake of
    the vendor at ``http://127.0.0.1:{port}`` is the operator's choice."""
    with module_api(request, tmp_path_factory, name,
                    resolver=FakeResolver({**NAMES, **vendor_names}),
                    settings={"allow_private_cidrs": LOOPBACK}) as server:
        yield server


# -- an HTTPS receiver -------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A client context trusting only the test CA, verifying host names as the default does."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


@pytest.fixture
def receiver(ca: trustme.CA) -> Iterator[Receiver]:
    """Answers 200 (a test may set ``status``) at ``https://RECEIVER_HOST:{port}/ingest``."""
    with Receiver(cert=ca.issue_cert(RECEIVER_HOST), host=RECEIVER_HOST,
                  path="/ingest") as server:
        yield server


@contextmanager
def at_receiver_host(app: Any, ca: trustme.CA) -> Iterator[str]:
    """``app`` served over HTTPS with a certificate of ``ca`` for ``RECEIVER_HOST``;
    yields ``https://RECEIVER_HOST:{port}``."""
    with Server(app, cert=ca.issue_cert(RECEIVER_HOST)) as server:
        yield f"https://{RECEIVER_HOST}:{server.port}"


@pytest.fixture
def delivering_api(make_api: MakeApi, client_tls: ssl.SSLContext) -> ApiServer:
    """An app whose test deliveries may reach 127.0.0.1 and trust the test CA."""
    return make_api(publish=True, ssl_context=client_tls,
                    settings={"allow_private_cidrs": LOOPBACK})
