"""SSRF refusals are no oracle of internal DNS (issue #11.6).

A refusal named the address a name resolved to ("resolves to 10.1.2.3"), so a
tenant could map internal names by creating destinations. Refusals of a resolved
name now say "resolves to an address in a private or reserved range"; the
address is logged at DEBUG for operators only.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.ssrf import validate_destination_url
from tests.unit.wire.test_ssrf import GENERIC, NAMES, REFUSED, make_resolver


def _name(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # the table's malformed URLs
        return ""


#: The table's names refused for what they resolve to (not for their form or port).
RESOLVED = [url for url, why in REFUSED if NAMES.get(_name(url))
            and ("embedding" in why or ("resolves to" in why and "no address" not in why))]


def test_the_table_has_names_resolving_to_blocked_addresses() -> None:
    assert len(RESOLVED) >= 8


@pytest.mark.parametrize("url", RESOLVED)
def test_a_refused_name_never_shows_its_address(url: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="auditrelay.wire.ssrf")
    host = _name(url)
    with pytest.raises(InvalidInputError) as info:
        validate_destination_url(url, resolver=make_resolver(), allow_private_cidrs=())
    message = str(info.value)
    assert GENERIC in message
    for address in NAMES[host]:
        assert str(address) not in message
    # Operators still learn what it resolved to, at DEBUG and nowhere louder.
    told = [r for r in caplog.records if host in r.getMessage()]
    assert told
    assert all(r.levelno == logging.DEBUG for r in told)
