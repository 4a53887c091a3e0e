"""The settings page in a real browser: Debian's Chromium, headless, driven by Playwright,
against the real API, a real worker process (``python -m auditrelay.ops worker``) and the
real broker.

One scenario, in the order a user meets it: sign in; add a destination through the
form and see it Active; send a test (the page shows its outcome); an audit event
emitted with the producer library is routed and delivered by the worker, and the
row turns "Last delivery just now" live, through ``audit.delivery-status`` and the
page's event stream; a destination whose receiver answers 500 turns "(failed)";
disabling shows Disabled. A screenshot of every step goes to
``test-artifacts/screenshots/``.

The receivers (``tests.support.servers.Receiver``) are plain-HTTP servers on
127.0.0.1, allowed by ``allow_private_cidrs``: the worker's delivery client trusts
only the public CAs, so a loopback HTTPS receiver with a test CA is not reachable for
it (the API's own test delivery over HTTPS is covered in ``tests/integration/api``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient
from playwright.sync_api import Page, expect, sync_playwright

from auditrelay.api.app import create_app
from auditrelay.kafka.admin import read_compacted
from auditrelay.ops.topics import ensure_topics
from auditrelay.producer import AuditProducer, ProducerConfig
from auditrelay.schemas.settings import Settings
from auditrelay.store.engine import upgrade_database
from auditrelay.wire.ssrf import IPAddress
from tests.support.cleanup import topics_cleaned_up
from tests.support.pipeline import WorkerProcess
from tests.support.polling import wait_until
from tests.support.servers import Receiver, serve
from tests.support.settings import make_settings

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "screenshots"
ADMIN = "admin-token-for-tests-0123456789abcdef"
WAIT_MS = 30_000


def _resolver(host: str, port: int) -> list[IPAddress]:
    return [ipaddress.ip_address("127.0.0.1")]


@pytest.fixture
def settings(tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
             unique_name: str) -> Iterator[Settings]:
    settings = make_settings(
        tmp_path, kafka_bootstrap, f"test.{unique_name}.", topic_partitions=1,
        admin_token=ADMIN, allow_private_cidrs="127.0.0.0/8", retry_schedule_seconds="60",
        retry_jitter=0)
    upgrade_database(settings.database_url)
    with topics_cleaned_up(kafka_admin, settings.topics):
        ensure_topics(settings)
        yield settings


def _wait_configs(settings: Settings, dest_ids: tuple[str, ...]) -> None:
    """The outbox publishes each added destination's config record on
    ``audit.destinations``, where the worker learns about it."""
    seen: dict[str, bytes | None] = {}

    def published() -> bool:
        seen.update(read_compacted(settings.kafka_bootstrap, settings.topics.destinations,
                                   timeout=5))
        return all(seen.get(d) is not None for d in dest_ids)

    wait_until(published, 30, lambda: f"config records of {dest_ids}: {sorted(seen)}",
               interval=0.5)
    for dest_id in dest_ids:
        assert json.loads(seen[dest_id] or b"{}")["enabled"] is True, dest_id


def _emit(settings: Settings, ws: str) -> str:
    """One real audit event from a service, through the producer library, for the router."""
    config = ProducerConfig.from_settings(settings, client_id="browser-test")
    with AuditProducer(config) as producer:
        return producer.emit(ws, "workspace", "updated", actor={"id": "usr_1", "type": "user"},
                             target={"type": "workspace", "id": ws}).id


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _add(page: Page, name: str, url: str) -> str:
    """Add a destination through the form; returns its id (from the table row)."""
    page.locator("#f-name").fill(name)
    page.locator("#f-url").fill(url)
    page.get_by_role("button", name="Add destination").click()
    expect(page.get_by_role("heading", name=f"{name} was added")).to_be_visible()
    assert page.get_by_label("Signing secret").input_value().startswith("whsec_")
    page.get_by_role("link", name="Done, back to destinations").click()
    row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
    return str(row.get_attribute("id")).removeprefix("dest-")


def test_the_settings_page_in_chromium(settings: Settings) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is needed: make system-deps"
    app = create_app(settings, resolver=_resolver, publish=True)
    with Receiver(path="/ingest") as good, Receiver(status=500, path="/ingest") as bad, \
            serve(app) as base:
        created = httpx.post(f"{base}/v1/workspaces", json={"name": "Acme",
                                                            "plan": "enterprise"},
                             headers={"Authorization": f"Bearer {ADMIN}"})
        assert created.status_code == 201, created.text
        ws, token = created.json()["id"], created.json()["token"]
        page_url = f"{base}/workspaces/{ws}/settings/webhooks"

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                 args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.set_default_timeout(10_000)
                _scenario(page, page_url, token, settings, ws, good, bad)
            finally:
                browser.close()


def _scenario(page: Page, page_url: str, token: str, settings: Settings,
              ws: str, good: Receiver, bad: Receiver) -> None:
    # Sign in, by keyboard.
    page.goto(page_url)
    expect(page).to_have_url(page_url + "/login")
    page.get_by_label("Workspace token").fill(token)
    _shot(page, "01-sign-in")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Webhook destinations")).to_be_visible()

    # A refused URL shows the API's message next to the field.
    page.locator("#f-name").fill("Nope")
    page.locator("#f-url").fill("https://10.0.0.1/in")
    page.get_by_role("button", name="Add destination").click()
    expect(page.locator("#f-url-error")).to_contain_text("url:")
    _shot(page, "02-validation")

    # Create a destination: Active, no deliveries yet.
    page.goto(page_url)
    primary = _add(page, "Primary", good.url)
    row = page.locator(f"#dest-{primary}")
    expect(row.locator('[data-field="badge"]')).to_have_text("Active")
    expect(row.locator('[data-field="delivery"]')).to_have_text("No deliveries yet")
    _shot(page, "03-created-active")

    # Send a test, by keyboard: its outcome is shown on the page.
    row.get_by_role("button", name="Send test").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#flash")).to_contain_text("Primary: Test delivered (200, ")
    assert len(good.requests) == 1
    _shot(page, "04-test-sent")

    broken = _add(page, "Broken", bad.url)
    _wait_configs(settings, (primary, broken))

    # A real worker (router, delivery, retry) routes one emitted event to both
    # destinations and delivers it; the rows change live (no reload).
    with WorkerProcess(settings, settings.var_dir / "worker.log") as worker:
        worker.wait_ready()
        emitted = _emit(settings, ws)
        row = page.locator(f"#dest-{primary}")
        expect(row.locator('[data-field="delivery"]')).to_have_text(
            "Last delivery just now", timeout=WAIT_MS)
        expect(page.locator(f'#dest-{broken} [data-field="delivery"]')).to_have_text(
            "Last delivery just now (failed)", timeout=WAIT_MS)
        _shot(page, "05-delivered-and-failed")
        # Besides it, the page's own audit events (workspace created, test sent...) are
        # routed too, in as many batches as the router's rounds cut them into.
        assert good.event_ids().count(emitted) == 1
        assert len(bad.requests) >= 1

        # The detail page lists the delivery.
        page.get_by_role("link", name="Broken", exact=True).click()
        expect(page.locator("#deliveries")).to_contain_text("500", timeout=WAIT_MS)
        _shot(page, "06-detail-failed")
        page.get_by_role("link", name="All destinations").click()

    # Disable: Disabled, with its reason.
    page.locator(f"#dest-{primary}").get_by_role("button", name="Disable").click()
    expect(page.locator("#flash")).to_have_text("Primary disabled.")
    badge = page.locator(f'#dest-{primary} [data-field="badge"]')
    expect(badge).to_have_text("Disabled (manual)")
    _shot(page, "07-disabled")

    # Delete, confirmed on its own page.
    page.locator(f"#dest-{broken}").get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete Broken").click()
    expect(page.locator("#flash")).to_have_text("Broken deleted.")
    expect(page.locator(f"#dest-{broken}")).to_have_count(0)
    _shot(page, "08-deleted")
    assert json.dumps(page.content()).count("whsec_") == 0  # no secret outside its page
