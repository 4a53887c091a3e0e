"""Custom destination headers: reserved names, token syntax, values, limits."""

from __future__ import annotations

import pytest

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.headers import (
    MAX_HEADERS,
    MAX_TOTAL_BYTES,
    is_reserved,
    validate_custom_headers,
)


def test_ordinary_headers_pass_and_are_copied() -> None:
    given = {"X-Splunk-Token": "abc 123", "X-Tenant": "t1", "Accept-Language": "en;q=0.9"}
    result = validate_custom_headers(given)
    assert result == given
    assert result is not given


def test_empty_is_fine() -> None:
    assert validate_custom_headers({}) == {}


@pytest.mark.parametrize(
    "name",
    [
        "Authorization", "authorization", "AUTHORIZATION", "Content-Type", "content-length",
        "Content-Encoding", "Host", "User-Agent", "Connection", "Keep-Alive",
        "Transfer-Encoding", "TE", "te", "Trailer", "Upgrade", "Proxy", "Proxy-Authorization",
        "proxy-connection", "X-Webhook-Id", "x-webhook-anything", "webhook-signature",
        "Webhook-Id", "ce-id", "CE-Type",
    ],
)
def test_reserved_names_are_refused(name: str) -> None:
    assert is_reserved(name)
    with pytest.raises(InvalidInputError) as info:
        validate_custom_headers({name: "v"})
    assert info.value.field == f"headers.{name}"
    assert f"header {name} is reserved" in str(info.value)


@pytest.mark.parametrize("name", ["X-Webhooks", "Webhooks-Id", "Cease", "X-Host", "Teapot"])
def test_near_misses_are_not_reserved(name: str) -> None:
    assert not is_reserved(name)
    assert validate_custom_headers({name: "v"}) == {name: "v"}


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("", ""),
        ("X Tenant", "X Tenant"),
        ("X-Tenant:", "X-Tenant:"),
        ("X-\u00e9", "X-\\xe9"),
        ("X-A\r\nX-B", "X-A\\r\\nX-B"),
        ("(comment)", "(comment)"),
        ("X " + "a" * 100, "X " + "a" * 62 + "..."),
    ],
)
def test_names_must_be_tokens(name: str, shown: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_custom_headers({name: "v"})
    assert info.value.field == f"headers.{shown}"
    assert "RFC 9110 token" in str(info.value)
    assert "\r" not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb", "a\x1bb", "caf\u00e9"],
)
def test_values_without_control_or_non_ascii_characters(value: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_custom_headers({"X-Tenant": value})
    assert info.value.field == "headers.X-Tenant"
    assert "no CR, LF, NUL" in str(info.value)


@pytest.mark.parametrize("value", [" lead", "trail ", "\ttab"])
def test_values_without_surrounding_whitespace(value: str) -> None:
    with pytest.raises(InvalidInputError, match="must not start or end with whitespace"):
        validate_custom_headers({"X-Tenant": value})


def test_values_are_never_echoed() -> None:
    secret = "s3cr3t-token-value"
    for bad in (secret + "\n", " " + secret):
        with pytest.raises(InvalidInputError) as info:
            validate_custom_headers({"X-Token": bad})
        assert secret not in str(info.value)


def test_tab_and_empty_values_are_allowed() -> None:
    assert validate_custom_headers({"X-A": "a\tb", "X-B": ""}) == {"X-A": "a\tb", "X-B": ""}


def test_same_name_twice_in_different_case() -> None:
    with pytest.raises(InvalidInputError, match="given twice") as info:
        validate_custom_headers({"X-Tenant": "a", "x-tenant": "b"})
    assert info.value.field == "headers.x-tenant"


def test_at_most_twenty_headers() -> None:
    twenty = {f"X-H{i}": "v" for i in range(MAX_HEADERS)}
    assert validate_custom_headers(twenty) == twenty
    with pytest.raises(InvalidInputError, match="at most 20 custom headers") as info:
        validate_custom_headers({**twenty, "X-One-More": "v"})
    assert info.value.field == "headers"


def test_total_size_limit_is_exact() -> None:
    name = "X-Big"
    fits = {name: "a" * (MAX_TOTAL_BYTES - len(name))}
    assert validate_custom_headers(fits) == fits
    with pytest.raises(InvalidInputError, match="8193 bytes, more than 8192") as info:
        validate_custom_headers({name: "a" * (MAX_TOTAL_BYTES - len(name) + 1)})
    assert info.value.field == "headers"


def test_total_size_counts_every_header() -> None:
    headers = {f"X-H{i}": "a" * 500 for i in range(17)}  # 17 * (4 or 5 + 500) > 8192
    with pytest.raises(InvalidInputError, match="more than 8192"):
        validate_custom_headers(headers)
