"""Pure parts of the settings page: relative times, status texts, CSRF and flash
tokens, form parsing, and the rendering of the destinations table's states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field

from auditrelay.api import web_support as support
from auditrelay.api.models import DestinationOut, TokenOut
from auditrelay.api.web import templates
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.kinds import KINDS
from auditrelay.wire.kinds.base import Credentials, Kind, KindOptions

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEY = support.web_key("k" * 44)


@pytest.mark.parametrize(("seconds", "text"), [
    (-30, "just now"), (0, "just now"), (9, "just now"), (10, "10s ago"), (59, "59s ago"),
    (60, "1m ago"), (150, "2m ago"), (3599, "59m ago"), (3600, "1h ago"),
    (86399, "23h ago"), (86400, "1d ago"), (3 * 86400 + 7200, "3d ago"),
])
def test_relative_time(seconds: int, text: str) -> None:
    assert support.relative_time(NOW - timedelta(seconds=seconds), NOW) == text


def _dest(**overrides: Any) -> DestinationOut:
    fields: dict[str, Any] = {
        "id": "dst_1", "workspace_id": "ws_1", "name": "Splunk",
        "url": "https://siem.example.com/in", "description": None, "enabled": True,
        "event_types": [], "headers": {}, "status": "active", "disabled_reason": None,
        "created_at": NOW, "updated_at": NOW, **overrides}
    return DestinationOut(**fields)


def test_delivery_texts() -> None:
    assert support.delivery_text(_dest(), NOW) == "No deliveries yet"
    ok = _dest(last_delivery_at=NOW - timedelta(minutes=2), last_delivery_ok=True)
    assert support.delivery_text(ok, NOW) == "Last delivery 2m ago"
    failed = _dest(last_delivery_at=NOW - timedelta(days=3), last_delivery_ok=False)
    assert support.delivery_text(failed, NOW) == "Last delivery 3d ago (failed)"


def test_row_status_names_the_disabled_reason() -> None:
    active = support.row_status(_dest(), NOW)
    assert (active.badge, active.reason) == ("Active", None)
    gone = support.row_status(_dest(enabled=False, status="disabled", disabled_reason="gone"),
                              NOW)
    assert (gone.badge, gone.reason) == ("Disabled", "gone")


def test_test_outcome_texts() -> None:
    assert support.test_outcome_text(True, 200, 123, None) == "Test delivered (200, 123 ms)"
    assert (support.test_outcome_text(True, 200, 12, "Splunk HEC accepted the event")
            == "Test delivered: Splunk HEC accepted the event (200, 12 ms)")
    assert (support.test_outcome_text(False, 403, 9, "Datadog rejected the API key")
            == "Test failed: Datadog rejected the API key (403, 9 ms)")
    assert (support.test_outcome_text(False, 500, 12, "HTTP 500")
            == "Test failed: HTTP 500 (500, 12 ms)")
    assert (support.test_outcome_text(False, None, 5000, "connect timeout")
            == "Test failed: connect timeout (no response, 5000 ms)")


def test_csrf_token_is_bound_to_key_workspace_and_session() -> None:
    token = support.csrf_token(KEY, "ws_1", "art_a")
    assert support.csrf_ok(KEY, "ws_1", "art_a", token)
    assert not support.csrf_ok(KEY, "ws_2", "art_a", token)
    assert not support.csrf_ok(KEY, "ws_1", "art_b", token)
    assert not support.csrf_ok(support.web_key("j" * 44), "ws_1", "art_a", token)
    assert not support.csrf_ok(KEY, "ws_1", "art_a", None)
    assert not support.csrf_ok(KEY, "ws_1", "art_a", "")
    assert not support.csrf_ok(KEY, "ws_1", "art_a", token[:-1])
    assert "art_a" not in token


def test_same_origin() -> None:
    assert support.same_origin(None, "http://127.0.0.1:8080")
    assert support.same_origin("http://127.0.0.1:8080", "http://127.0.0.1:8080/")
    assert not support.same_origin("https://evil.example", "http://127.0.0.1:8080")
    assert not support.same_origin("null", "http://127.0.0.1:8080")


def test_flash_round_trips_and_refuses_forgeries() -> None:
    value = support.sign_flash(KEY, "Splunk disabled.", "info")
    assert support.read_flash(KEY, value) == ("Splunk disabled.", "info")
    payload, mac = value.rsplit(".", 1)
    forged = support.sign_flash(support.web_key("j" * 44), "Hacked", "ok")
    assert support.read_flash(KEY, forged) is None
    assert support.read_flash(KEY, payload + "." + "0" * len(mac)) is None
    assert support.read_flash(KEY, None) is None
    assert support.read_flash(KEY, "garbage") is None


def test_form_parsing() -> None:
    body = support.destination_from_form({
        "name": " Splunk ", "url": "https://siem.example.com/in",
        "event_types": "pro.atmos.auth.*, pro.atmos.billing.*\n\npro.atmos.lock.*",
        "headers": "X-Token: abc\n\nX-Env:prod", "description": "  "})
    assert body.name == "Splunk"
    assert body.event_types == ["pro.atmos.auth.*", "pro.atmos.billing.*", "pro.atmos.lock.*"]
    assert body.headers == {"X-Token": "abc", "X-Env": "prod"}
    assert body.description is None


@pytest.mark.parametrize(("form", "field", "key"), [
    ({"name": "", "url": "https://a.example"}, "name", "name"),
    ({"name": "a", "url": ""}, "url", "webhook.url"),
    ({"name": "a", "webhook.url": ""}, "url", "webhook.url"),
    ({"name": "a", "url": "https://a.example", "event_types": "Bad Glob"}, "event_types",
     "event_types"),
    ({"name": "a", "url": "https://a.example", "headers": "no colon here"}, "headers",
     "headers"),
    ({"name": "a", "url": "https://a.example", "description": "x" * 1001}, "description",
     "description"),
    ({"name": "a", "kind": "nope", "url": "https://a.example"}, "kind", "kind"),
])
def test_form_errors_name_their_field(form: dict[str, str], field: str, key: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        support.destination_from_form(form)
    assert support.form_field(raised.value) == key
    assert str(raised.value).startswith(f"{field}: ")


def test_form_field_of_service_errors() -> None:
    assert support.form_field(InvalidInputError("x", field="headers.X-Name")) == "headers"
    assert support.form_field(InvalidInputError("x", field="url")) == "webhook.url"
    assert support.form_field(InvalidInputError("x", field="url"), "fake") == "fake.url"
    assert (support.form_field(InvalidInputError("x", field="options.index"), "fake")
            == "fake.options.index")
    assert (support.form_field(InvalidInputError("x", field="credentials.token"), "fake")
            == "fake.credentials.token")
    assert support.form_field(InvalidInputError("x", field="kind"), "fake") == "kind"
    assert support.form_field(InvalidInputError("x", field=None)) == "name"


# -- the kinds' fields, from the registry ---------------------------------------------------


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class FakeOptions(KindOptions):
    index: str
    sourcetype: str = "_json"
    host: str | None = None
    gzip: bool = False
    ack: bool = True
    mode: Literal["fast", "safe"] = "safe"
    level: Literal["a", "b"] | None = None
    colour: Colour = Colour.BLUE
    batch: int = Field(default=10, description="Events per request.")
    tags: list[str] = Field(default_factory=list)


class Fake(Kind):
    name: ClassVar[str] = "fake"
    label: ClassVar[str] = "Fake SIEM"
    Options: ClassVar[type[KindOptions]] = FakeOptions
    credentials: ClassVar[Credentials] = Credentials(
        ("api_key", "username", "password"),
        (frozenset({"api_key"}), frozenset({"username", "password"})))
    default_categories: ClassVar[tuple[str, ...]] = ("auth", "billing")
    url_choices: ClassVar[tuple[tuple[str, str], ...]] = (
        ("EU", "https://eu.fake.example"), ("US", "https://us.fake.example"))
    url_label: ClassVar[str] = "Site"


class SecretUrl(Kind):
    name: ClassVar[str] = "secret_url"
    label: ClassVar[str] = "Chat"
    url_secret: ClassVar[bool] = True
    url_hint_text: ClassVar[str] = "The incoming-webhook URL: it is the credential."


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "fake", Fake())
    monkeypatch.setitem(KINDS, "secret_url", SecretUrl())


def _form_of(name: str, current: DestinationOut | None = None) -> support.KindForm:
    return next(k for k in support.kind_forms(current) if k.name == name)


def test_every_registered_kind_has_its_fields() -> None:
    for kind in KINDS.values():
        form = _form_of(kind.name)
        assert form.label == kind.label
        keys = [f.key for f in form.fields]
        assert keys == [f"{kind.name}.url",
                        *(f"{kind.name}.options.{n}" for n in kind.Options.model_fields),
                        *(f"{kind.name}.credentials.{n}" for n in kind.credentials.names)]
    assert ("webhook", "Webhook") in support.kind_choices()
    assert _form_of("webhook").signed


@pytest.mark.usefixtures("fakes")
def test_a_kinds_fields_follow_its_options_model() -> None:
    form = _form_of("fake")
    fields = {f.key.removeprefix("fake."): f for f in form.fields}
    assert not form.signed
    assert form.note == ("Without event-type filters it receives these categories only: "
                         "auth, billing.")
    url = fields["url"]
    assert (url.widget, url.label, url.value) == ("select", "Site", "https://eu.fake.example")
    assert url.choices == (("https://eu.fake.example", "EU"), ("https://us.fake.example", "US"))
    assert (fields["options.index"].widget, fields["options.index"].required) == ("text", True)
    assert fields["options.sourcetype"].value == "_json"
    assert "Default: _json." in fields["options.sourcetype"].hint
    assert fields["options.host"].value == ""
    assert (fields["options.gzip"].widget, fields["options.gzip"].value) == ("checkbox", "")
    assert fields["options.ack"].value == "true"
    assert fields["options.mode"].choices == (("fast", "fast"), ("safe", "safe"))
    assert fields["options.mode"].value == "safe"
    assert fields["options.level"].choices == (("", "(none)"), ("a", "a"), ("b", "b"))
    assert fields["options.colour"].choices == (("red", "red"), ("blue", "blue"))
    assert fields["options.colour"].value == "blue"
    assert (fields["options.batch"].widget, fields["options.batch"].value) == ("number", "10")
    assert fields["options.batch"].hint == "Events per request. Default: 10."
    assert fields["options.tags"].widget == "textarea"
    for name in ("api_key", "username", "password"):
        cred = fields[f"credentials.{name}"]
        assert (cred.widget, cred.value, cred.required) == ("password", "", False)
        assert cred.hint == "Needs api_key, or password and username."
    assert fields["credentials.api_key"].label == "API key"
    assert fields["credentials.api_key"].id == "f-fake-credentials-api_key"

    chat = {f.key: f for f in _form_of("secret_url").fields}
    assert chat["secret_url.url"].widget == "url"
    assert chat["secret_url.url"].hint == "The incoming-webhook URL: it is the credential."


@pytest.mark.usefixtures("fakes")
def test_the_edit_form_shows_the_saved_options_and_keeps_url_and_credentials() -> None:
    current = _dest(kind="fake", options={"index": "main", "gzip": True, "ack": False,
                                          "tags": ["a", "b"], "mode": "fast"},
                    credentials_set=["api_key"])
    fields = {f.key.removeprefix("fake."): f for f in _form_of("fake", current).fields}
    assert fields["url"].choices[0] == ("", "Keep the saved one")
    assert fields["url"].value == ""
    assert fields["options.index"].value == "main"
    assert fields["options.gzip"].value == "true"
    assert fields["options.ack"].value == ""
    assert fields["options.tags"].value == "a\nb"
    assert fields["options.mode"].value == "fast"
    assert all(f.value == "" and "keep" in f.hint for k, f in fields.items()
               if k.startswith("credentials."))
    # Another kind's part of the same edit form shows its defaults.
    webhook = {f.key: f for f in _form_of("webhook", current).fields}
    assert webhook["webhook.url"].value == ""
    assert "Leave empty to keep" in webhook["webhook.url"].hint


@pytest.mark.usefixtures("fakes")
def test_the_form_reads_the_selected_kinds_fields_only() -> None:
    form = {
        "name": "Fake", "kind": "fake", "event_types": "",
        "webhook.url": "https://hooks.example/in", "webhook.options.gzip": "true",
        "fake.url": "https://us.fake.example", "fake.options.index": " main ",
        "fake.options.sourcetype": "", "fake.options.gzip": "true", "fake.options.ack": "false",
        "fake.options.tags": "a\n\n b ", "fake.options.batch": "5",
        "fake.credentials.api_key": " key1 ", "fake.credentials.username": "",
    }
    body = support.destination_from_form(form)
    assert body.kind == "fake"
    assert body.url == "https://us.fake.example"
    assert body.options == {"index": "main", "gzip": True, "ack": False, "tags": ["a", "b"],
                            "batch": "5"}
    assert body.credentials == {"api_key": "key1"}
    # No filters typed: the kind's default filter applies (the service fills it in).
    assert "event_types" not in body.model_fields_set
    webhook = support.destination_from_form({**form, "kind": "webhook"})
    assert (webhook.url, webhook.options, webhook.credentials) == (
        "https://hooks.example/in", {"gzip": True}, {})
    typed = support.destination_from_form({**form, "event_types": "pro.atmos.auth.*"})
    assert typed.event_types == ["pro.atmos.auth.*"]


@pytest.mark.usefixtures("fakes")
def test_the_edit_form_keeps_what_is_left_empty() -> None:
    form = {"name": "Fake", "kind": "fake", "fake.url": "", "fake.options.index": "main",
            "fake.credentials.api_key": "", "event_types": "", "headers": "",
            "description": ""}
    patch = support.patch_from_form(form)
    assert patch.model_fields_set == {"name", "kind", "options", "description", "event_types"}
    assert patch.options == {"index": "main"}
    assert patch.event_types == []
    given = support.patch_from_form({**form, "fake.url": "https://eu.fake.example",
                                     "fake.credentials.api_key": "k2",
                                     "headers": "X-Env: prod"})
    assert given.url == "https://eu.fake.example"
    assert given.credentials == {"api_key": "k2"}
    assert given.headers == {"X-Env": "prod"}


@pytest.mark.usefixtures("fakes")
def test_a_refused_form_keeps_no_secret() -> None:
    kept = support.kept_values({
        "csrf": "c", "name": "n", "kind": "fake", "fake.url": "https://eu.fake.example",
        "fake.options.index": "main", "fake.credentials.api_key": "key1",
        "secret_url.url": "https://chat.example/hooks/T0/B0/secret", "url": "https://x.example",
        "webhook.url": "https://hooks.example/in"})
    assert kept == {"name": "n", "kind": "fake", "fake.url": "https://eu.fake.example",
                    "fake.options.index": "main", "url": "https://x.example",
                    "webhook.url": "https://hooks.example/in"}


@pytest.mark.usefixtures("fakes")
def test_the_add_form_renders_every_kinds_fields_with_labels() -> None:
    html = _render_rows()
    for kind in support.kind_forms():
        assert f'<fieldset class="kind-fields" data-kind="{kind.name}">' in html
        for field in kind.fields:
            assert f'<label for="{field.id}">' in html, field.key
            assert f'id="{field.id}" name="{field.key}"' in html, field.key
    assert ('type="password" id="f-fake-credentials-api_key" name="fake.credentials.api_key" '
            'value=""') in html
    assert '<option value="https://eu.fake.example" selected>EU</option>' in html
    assert '<option value="fake">Fake SIEM</option>' in html
    assert '<option value="webhook" selected>Webhook</option>' in html


def _render_rows(*dests: DestinationOut) -> str:
    rows = [(d, support.row_status(d, NOW)) for d in dests]
    return templates.get_template("page.html").render(
        static="/static/web", ws="ws_1", workspace={"name": "Acme"}, csrf="c" * 64, rows=rows,
        form={}, errors={}, flash=None, page="/workspaces/ws_1/settings/webhooks")


def _row(html: str, dest_id: str) -> str:
    return html.split(f'id="dest-{dest_id}"', 1)[1].split("</tr>", 1)[0]


def test_the_table_renders_each_state() -> None:
    html = _render_rows(
        _dest(id="dst_new"),
        _dest(id="dst_ok", last_delivery_at=NOW - timedelta(minutes=2), last_delivery_ok=True),
        _dest(id="dst_bad", last_delivery_at=NOW - timedelta(days=3), last_delivery_ok=False),
        _dest(id="dst_off", name="<b>x</b>", enabled=False, status="disabled",
              disabled_reason="failing"))
    assert "No deliveries yet" in _row(html, "dst_new")
    assert ">Active<" in _row(html, "dst_new")
    assert ">Disable</button>" in _row(html, "dst_new")
    assert "Last delivery 2m ago<" in _row(html, "dst_ok")
    bad = _row(html, "dst_bad")
    assert "Last delivery 3d ago (failed)" in bad
    assert 'class="delivery failed"' in bad
    off = _row(html, "dst_off")
    assert ">Disabled<" in off
    assert "(failing)" in off
    assert ">Enable</button>" in off
    assert "&lt;b&gt;x&lt;/b&gt;" in off  # names are escaped
    for dest_id in ("dst_new", "dst_ok", "dst_bad", "dst_off"):
        assert _row(html, dest_id).count('aria-live="polite"') == 2
        assert f"/destinations/{dest_id}/delete" in _row(html, dest_id)
    # Every input has a label.
    for name in support.FORM_FIELDS:
        assert f'<label for="f-{name}">' in html
        assert f'id="f-{name}"' in html


def test_an_empty_table_says_so() -> None:
    assert "No destinations yet" in _render_rows()


def test_a_token_row_shows_ages_and_never_used() -> None:
    token = TokenOut(id="tok_1", name="CI", prefix="art_abcdefgh",
                     created_at=NOW - timedelta(days=3), last_used_at=None)
    row = support.token_row(token, NOW, current=True)
    assert (row.created, row.last_used, row.prefix, row.current) == (
        "3d ago", "Never", "art_abcdefgh", True)
    used = token.model_copy(update={"last_used_at": NOW - timedelta(minutes=5)})
    assert support.token_row(used, NOW, current=False).last_used == "5m ago"


@pytest.mark.parametrize("name", ["", "   ", "a\tb", "x" * 201])
def test_a_bad_token_name_names_the_field(name: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        support.token_from_form({"token_name": name})
    assert refused.value.field == "token_name"
    assert str(refused.value).startswith("token name: ")


def test_a_token_name_is_trimmed() -> None:
    assert support.token_from_form({"token_name": "  CI  "}).name == "CI"



@pytest.mark.usefixtures("fakes")
def test_a_row_shows_the_kind_its_options_and_which_credentials_are_set() -> None:
    html = _render_rows(
        _dest(id="dst_fake", kind="fake", options={"index": "main", "gzip": True},
              credentials_set=["api_key"]),
        _dest(id="dst_hook", options={"gzip": False}))
    fake = _row(html, "dst_fake")
    assert ">Fake SIEM<br>" in fake
    assert "<code>gzip</code> on, <code>index</code> main; credentials set: api_key" in fake
    assert "Rotate secret" not in fake  # not signed: nothing to rotate
    hook = _row(html, "dst_hook")
    assert ">Webhook<br>" in hook
    assert "<code>gzip</code> off" in hook
    assert ">Rotate secret</button>" in hook
