"""The settings page in a real browser: Debian's Chromium, headless, driven by Playwright,
against the real API, a real worker process (``python -m auditrelay.ops worker``) and the
real broker.

``test_every_kind_in_chromium``: one destination of each kind registered in
``auditrelay.wire.kinds.KINDS`` is added through the form (the kind chosen in the
list, its own fields filled in from ``KIND_ROWS``), sent a test (the page shows the
receiver's verdict in words) and, through the worker, a delivery (its row shows the
last delivery); a kind registered without a row in ``KIND_ROWS`` fails the test.

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
import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import httpx
import pytest
from confluent_kafka.admin import AdminClient
from playwright.sync_api import Browser, Page, expect, sync_playwright

from auditrelay.api.app import create_app
from auditrelay.kafka.admin import read_compacted
from auditrelay.ops.topics import ensure_topics
from auditrelay.producer import AuditProducer, ProducerConfig
from auditrelay.schemas.settings import Settings
from auditrelay.store.engine import upgrade_database
from auditrelay.wire.kinds import KINDS
from auditrelay.wire.kinds.base import Credentials, Kind, KindOptions
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
    page.locator("#f-webhook-url").fill(url)
    page.get_by_role("button", name="Add destination").click()
    expect(page.get_by_role("heading", name=f"{name} was added")).to_be_visible()
    assert page.get_by_label("Signing secret").input_value().startswith("whsec_")
    page.get_by_role("link", name="Done, back to destinations").click()
    row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
    return str(row.get_attribute("id")).removeprefix("dest-")


def _settings_page(base: str, name: str) -> tuple[str, str, str]:
    """A new Enterprise workspace through the API: its id, token and settings page URL."""
    created = httpx.post(f"{base}/v1/workspaces", json={"name": name, "plan": "enterprise"},
                         headers={"Authorization": f"Bearer {ADMIN}"})
    assert created.status_code == 201, created.text
    ws, token = created.json()["id"], created.json()["token"]
    return ws, token, f"{base}/workspaces/{ws}/settings/webhooks"


@contextmanager
def _chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, closed whatever happens."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _page(browser: Browser, *, script: bool = True) -> Page:
    page = browser.new_context(java_script_enabled=script).new_page()
    page.set_default_timeout(10_000)
    return page


def test_the_settings_page_in_chromium(settings: Settings) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is needed: make system-deps"
    app = create_app(settings, resolver=_resolver, publish=True)
    with Receiver(path="/ingest") as good, Receiver(status=500, path="/ingest") as bad, \
            serve(app) as base:
        ws, token, page_url = _settings_page(base, "Acme")
        with _chromium() as browser:
            _scenario(_page(browser), page_url, token, settings, ws, good, bad)


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
    page.locator("#f-webhook-url").fill("https://10.0.0.1/in")
    page.get_by_role("button", name="Add destination").click()
    expect(page.locator("#f-webhook-url-error")).to_contain_text("url:")
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
    expect(page.locator("#flash")).to_contain_text(
        "Primary: Test delivered: the receiver accepted the event (200, ")
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


# -- every kind ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindRow:
    """How this test fills in one kind's fields; its URL is a loopback receiver's."""

    #: Option name -> a text or a list choice typed in, or a checkbox's state.
    options: Mapping[str, str | bool] = field(default_factory=dict)
    credentials: Mapping[str, str] = field(default_factory=dict)
    #: Appended to the receiver's base URL (a kind whose URL has a path of its own).
    path: str = ""
    #: Whether this kind reads the plain receiver's ``200 {}`` as accepted; None: not
    #: asserted here (the kind's own tests answer as its vendor does).
    accepted: bool | None = None


#: One row per kind; a kind registered without one fails the test (add its row here).
KIND_ROWS: dict[str, KindRow] = {
    "webhook": KindRow(options={"gzip": True}, path="/hook", accepted=True),
    "splunk_hec": KindRow(
        options={"index": "main", "source": "auditrelay", "sourcetype": "_json"},
        credentials={"token": "0f0e0d0c-0b0a-4909-8807-060504030201"}),
    "datadog_logs": KindRow(options={"service": "auditrelay", "ddtags": "env:test"},
                            credentials={"api_key": "0123456789abcdef0123456789abcdef"}),
    "sumo_logic": KindRow(options={"category": "audit/atmos"},
                          path="/receiver/v1/http/ZaVnC4dhaV2Xtest"),
    "elasticsearch": KindRow(options={"index": "audit-events"},
                             credentials={"api_key": "VnVhQ2ZHY0JDZGJrUW0tZTV1OnVpMmxwMmF4"}),
    "slack": KindRow(path="/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
}
_DELIVERY = re.compile(r"^Last delivery (just now|\d+s ago)( \(failed\))?$")


def test_every_kind_in_chromium(settings: Settings) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is needed: make system-deps"
    missing = sorted(set(KINDS) - set(KIND_ROWS))
    if missing:
        pytest.fail(f"kinds registered without a row in KIND_ROWS (add one each): {missing}")
    app = create_app(settings, resolver=_resolver, publish=True)
    with ExitStack() as stack:
        receivers = {name: stack.enter_context(Receiver()) for name in KINDS}
        base = stack.enter_context(serve(app))
        ws, token, page_url = _settings_page(base, "Kinds")
        with _chromium() as browser:
            _every_kind(_page(browser), page_url, token, settings, ws, receivers)


def _every_kind(page: Page, page_url: str, token: str, settings: Settings, ws: str,
                receivers: dict[str, Receiver]) -> None:
    page.goto(page_url)
    page.get_by_label("Workspace token").fill(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Webhook destinations")).to_be_visible()

    # A refused URL of the last kind listed: the message names the field, the name is kept.
    last = list(KINDS.values())[-1]
    if not last.url_choices:
        page.locator("#f-kind").select_option(last.name)
        page.locator("#f-name").fill("Refused")
        page.locator(f"#f-{last.name}-url").fill("https://10.0.0.1")
        page.get_by_role("button", name="Add destination").click()
        expect(page.locator(f"#f-{last.name}-url-error")).to_contain_text("url:")
        expect(page.locator("#f-name")).to_have_value("Refused")
        _shot(page, "kinds-01-validation")

    ids: dict[str, str] = {}
    for name, kind in KINDS.items():
        page.goto(page_url)
        ids[name] = _add_kind(page, name, receivers[name].url.rstrip("/") + KIND_ROWS[name].path)
        row = page.locator(f"#dest-{ids[name]}")
        expect(row.locator("td.kind")).to_contain_text(kind.label)
        for credential in KIND_ROWS[name].credentials:
            expect(row.locator("td.kind")).to_contain_text(credential)
    _shot(page, "kinds-02-added")

    # A test of each: the page shows the receiver's verdict in words; the receiver got it.
    for name, kind in KINDS.items():
        dest = f"{name} test"
        page.locator(f"#dest-{ids[name]}").get_by_role("button", name="Send test").click()
        flash = page.locator("#flash")
        expect(flash).to_contain_text(f"{dest}: Test ")
        if KIND_ROWS[name].accepted:
            expect(flash).to_contain_text(
                f"{dest}: Test delivered: {kind.accepted_words(1)} (200, ")
        assert len(receivers[name].requests) == 1, name
    _shot(page, "kinds-03-tested")

    # The worker delivers an emitted auth event (every kind's default filter takes it):
    # each row shows its last delivery, live.
    _wait_configs(settings, tuple(ids.values()))
    with WorkerProcess(settings, settings.var_dir / "worker.log") as worker:
        worker.wait_ready()
        _emit_auth(settings, ws)
        for name in KINDS:
            cell = page.locator(f'#dest-{ids[name]} [data-field="delivery"]')
            expect(cell).to_have_text(_DELIVERY, timeout=WAIT_MS)
            if KIND_ROWS[name].accepted:
                expect(cell).not_to_contain_text("failed")
            assert len(receivers[name].requests) >= 2, name
        _shot(page, "kinds-04-delivered")

    # The detail page: kind, options, which credentials are set, the deliveries.
    for name, kind in KINDS.items():
        page.goto(f"{page_url}/destinations/{ids[name]}")
        expect(page.locator("#dest-kind")).to_have_text(kind.label)
        for option in KIND_ROWS[name].options:
            expect(page.locator("#dest-options")).to_contain_text(option)
        for credential in KIND_ROWS[name].credentials:
            expect(page.locator("#dest-credentials")).to_contain_text(credential)
        expect(page.locator("#deliveries")).to_be_visible(timeout=WAIT_MS)
        _shot(page, f"kinds-05-detail-{name}")
        text = page.content()
        for value in KIND_ROWS[name].credentials.values():
            assert value not in text, name

    # Edit the webhook: the kind's part of the edit form shows its saved options.
    page.goto(f"{page_url}/destinations/{ids['webhook']}")
    gzip = page.locator("#f-webhook-options-gzip")
    expect(gzip).to_be_checked()
    gzip.uncheck()
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#flash")).to_have_text("webhook test saved.")
    page.goto(f"{page_url}/destinations/{ids['webhook']}")
    expect(page.locator("#dest-options")).to_have_text("gzip off")
    _shot(page, "kinds-06-edited")


def _add_kind(page: Page, name: str, url: str) -> str:
    """Add a destination of kind ``name`` through the form; returns its id."""
    kind, row = KINDS[name], KIND_ROWS[name]
    page.locator("#f-kind").select_option(name)
    # Only the chosen kind's fields are shown (the script hides the others).
    for other in KINDS:
        group = page.locator(f'fieldset[data-kind="{other}"]')
        if other == name:
            expect(group).to_be_visible()
        else:
            expect(group).to_be_hidden()
    page.locator("#f-name").fill(f"{name} test")
    url_field = page.locator(f"#f-{name}-url")
    if kind.url_choices:
        # The page offers the kind's list (Datadog's sites); a loopback receiver stands in
        # for the first site listed, as a self-hosted intake would be.
        listed = [url for _, url in kind.url_choices]
        assert url_field.evaluate("s => Array.from(s.options).map(o => o.value)") == listed
        url_field.evaluate("(s, url) => { s.options[s.selectedIndex].value = url; }", url)
    else:
        url_field.fill(url)
    for option, value in row.options.items():
        found = page.locator(f"#f-{name}-options-{option}")
        assert found.count() == 1, f"the page has no option {option} for the kind {name}"
        if isinstance(value, bool):
            found.set_checked(value)
        elif found.evaluate("e => e.tagName") == "SELECT":
            found.select_option(value)
        else:
            found.fill(value)
    for credential, value in row.credentials.items():
        found = page.locator(f"#f-{name}-credentials-{credential}")
        assert found.count() == 1, f"the page has no credential {credential} for {name}"
        found.fill(value)
    page.get_by_role("button", name="Add destination").click()
    if kind.name == "webhook":
        expect(page.get_by_role("heading", name=f"{name} test was added")).to_be_visible()
        page.get_by_role("link", name="Done, back to destinations").click()
    else:
        expect(page.locator("#flash")).to_have_text(f"{name} test added.")
    link = page.get_by_role("link", name=f"{name} test", exact=True)
    return str(page.locator("tr", has=link).get_attribute("id")).removeprefix("dest-")


def _emit_auth(settings: Settings, ws: str) -> str:
    config = ProducerConfig.from_settings(settings, client_id="browser-test-kinds")
    with AuditProducer(config) as producer:
        return producer.emit(ws, "auth", "login_succeeded",
                             actor={"id": "usr_1", "type": "user"},
                             target={"type": "user", "id": "usr_1"}).id


# -- the form, with and without its script ------------------------------------------------------


class _SurveyOptions(KindOptions):
    region: Literal["north", "south"] = "north"
    compress: bool = True


class _Survey(Kind):
    """A kind registered for this test only (in this process: nothing is delivered)."""

    name: ClassVar[str] = "survey"
    label: ClassVar[str] = "Survey Logs"
    Options: ClassVar[type[KindOptions]] = _SurveyOptions
    credentials: ClassVar[Credentials] = Credentials(("api_key",), (frozenset({"api_key"}),))
    url_choices: ClassVar[tuple[tuple[str, str], ...]] = (
        ("North site", "https://north.survey.example"),
        ("South site", "https://south.survey.example"))
    url_label: ClassVar[str] = "Site"


SURVEY_KEY = "survey-key-0123456789abcdef"


def test_the_form_sends_the_chosen_kinds_fields_with_and_without_script(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is needed: make system-deps"
    monkeypatch.setitem(KINDS, "survey", _Survey())
    app = create_app(settings, resolver=_resolver, publish=False)
    with serve(app) as base:
        ws, token, page_url = _settings_page(base, "Form")
        with _chromium() as browser:
            for script in (True, False):
                page = _page(browser, script=script)
                _survey_form(page, page_url, token, script=script)
                page.context.close()
        listed = httpx.get(f"{base}/v1/workspaces/{ws}/destinations",
                           headers={"Authorization": f"Bearer {token}"}).json()["items"]
    got = {d["name"]: (d["kind"], d["options"], d["credentials_set"]) for d in listed}
    assert got == {name: ("survey", {"region": "south", "compress": False}, ["api_key"])
                   for name in ("With script", "Without script")}


def _survey_form(page: Page, page_url: str, token: str, *, script: bool) -> None:
    page.goto(page_url)
    page.get_by_label("Workspace token").fill(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Webhook destinations")).to_be_visible()
    webhook = page.locator('fieldset[data-kind="webhook"]')
    survey = page.locator('fieldset[data-kind="survey"]')
    name = "With script" if script else "Without script"
    if script:
        expect(survey).to_be_hidden()
        page.locator("#f-kind").select_option("survey")
        expect(webhook).to_be_hidden()
    else:
        # Every kind's fields are shown; a webhook URL typed in is not read for a survey.
        expect(webhook).to_be_visible()
        page.locator("#f-webhook-url").fill("https://10.0.0.1/not-read")
        page.locator("#f-kind").select_option("survey")
    expect(survey).to_be_visible()
    # A refused form first: the credential is missing; the message names it.
    page.locator("#f-name").fill(name)
    page.locator("#f-survey-url").select_option(label="South site")
    page.locator("#f-survey-options-region").select_option("south")
    page.locator("#f-survey-options-compress").uncheck()
    page.get_by_role("button", name="Add destination").click()
    expect(page.locator("#f-survey-credentials-api_key-error")).to_contain_text(
        "credentials.api_key")
    # What was typed is kept (the chosen kind, its options), the page shows its fields.
    expect(page.locator("#f-name")).to_have_value(name)
    expect(page.locator("#f-kind")).to_have_value("survey")
    expect(page.locator("#f-survey-url")).to_have_value("https://south.survey.example")
    expect(page.locator("#f-survey-options-region")).to_have_value("south")
    expect(page.locator("#f-survey-options-compress")).not_to_be_checked()
    expect(survey).to_be_visible()
    _shot(page, f"form-{'script' if script else 'no-script'}-refused")
    page.locator("#f-survey-credentials-api_key").fill(SURVEY_KEY)
    page.get_by_role("button", name="Add destination").click()
    expect(page.locator("#flash")).to_have_text(f"{name} added.")
    row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
    expect(row.locator("td.kind")).to_contain_text("Survey Logs")
    expect(row.locator("td.kind")).to_contain_text("credentials set: api_key")
    assert SURVEY_KEY not in page.content()
