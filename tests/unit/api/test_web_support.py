"""Pure parts of the settings page: relative times, status texts, CSRF and flash
tokens, form parsing, and the rendering of the destinations table's states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auditrelay.api import web_support as support
from auditrelay.api.models import DestinationOut, TokenOut
from auditrelay.api.web import templates
from auditrelay.schemas.errors import InvalidInputError

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


@pytest.mark.parametrize(("form", "field"), [
    ({"name": "", "url": "https://a.example"}, "name"),
    ({"name": "a", "url": ""}, "url"),
    ({"name": "a", "url": "https://a.example", "event_types": "Bad Glob"}, "event_types"),
    ({"name": "a", "url": "https://a.example", "headers": "no colon here"}, "headers"),
    ({"name": "a", "url": "https://a.example", "description": "x" * 1001}, "description"),
])
def test_form_errors_name_their_field(form: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        support.destination_from_form(form)
    assert support.form_field(raised.value) == field
    assert str(raised.value).startswith(f"{field}: ")


def test_form_field_of_service_errors() -> None:
    assert support.form_field(InvalidInputError("x", field="headers.X-Name")) == "headers"
    assert support.form_field(InvalidInputError("x", field="url")) == "url"
    assert support.form_field(InvalidInputError("x", field=None)) == "name"


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

