"""Rate limits of the API (issue #11.4): test sends and failed authentications.

200 concurrent test sends made 200 outbound POSTs, and token guessing ran at ~690/s
with no slowdown. Now a destination takes one test send per 5 s and a workspace 30 a
minute; a client address (and a workspace, for addresses that failed themselves) that
failed to authenticate 10 times in a minute gets 429 with ``Retry-After``, before its
token is looked at, for twice as long after every further failure. Refusals and
failures are counted in ``/metrics``.

The app's limiters read a clock the tests move (``ApiLimits.from_settings(...,
clock=...)`` on ``app.state.limits``): no test sleeps. Requests from a second client
address leave from 127.0.0.2, which is loopback too.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from auditrelay.api.ratelimit import ApiLimits
from tests.integration.api.conftest import LOOPBACK, ApiServer, MakeApi, error_of
from tests.integration.web.conftest import PAGE, csrf_of, sign_in
from tests.support.clock import ManualClock
from tests.support.servers import Receiver


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(path="/ingest") as server:  # plain http on 127.0.0.1
        yield server


@pytest.fixture
def api(make_api: MakeApi, clock: ManualClock) -> ApiServer:
    server = make_api(settings={"allow_private_cidrs": LOOPBACK})
    server.app.state.limits = ApiLimits.from_settings(server.settings, clock=clock)
    return server


def _metric(api: ApiServer, name: str, **labels: str) -> float:
    response = api.http.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _test(api: ApiServer, ws: str, token: str, dest: str) -> httpx.Response:
    return api.call("POST", f"/v1/workspaces/{ws}/destinations/{dest}/test", token)


def _refused(response: httpx.Response, wait: int) -> str:
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == str(wait)
    error = error_of(response)
    assert error["code"] == "rate_limited"
    return error["message"]


# -- test sends ----------------------------------------------------------------------------


def test_a_second_test_send_within_5_s_is_refused(api: ApiServer, receiver: Receiver,
                                                  clock: ManualClock) -> None:
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url)["id"]
    other = api.create_destination(ws, token, url=receiver.url)["id"]
    outbox = api.outbox_count()
    assert _test(api, ws, token, dest).json()["delivered"] is True
    clock.now += 1.5
    assert "try again in 4 s" in _refused(_test(api, ws, token, dest), 4)
    assert len(receiver.requests) == 1  # the refused one never left
    assert api.outbox_count() == outbox + 1  # nor was it audited as sent
    assert _test(api, ws, token, other).status_code == 200  # another destination may
    clock.now += 3.5
    assert _test(api, ws, token, dest).status_code == 200
    assert len(receiver.requests) == 3


def test_the_31st_test_send_of_a_workspace_in_a_minute_is_refused(
        api: ApiServer, receiver: Receiver, clock: ManualClock) -> None:
    ws, token = api.create_workspace()
    dests = [api.create_destination(ws, token, url=receiver.url)["id"] for _ in range(6)]
    for n in range(30):  # each destination every 6 s: never the per-destination limit
        assert _test(api, ws, token, dests[n % 6]).status_code == 200
        clock.now += 1
    message = _refused(_test(api, ws, token, dests[0]), 30)  # the first left at 1000
    assert "30 tests in the last minute" in message
    assert len(receiver.requests) == 30
    other_ws, other_token = api.create_workspace(name="Other")
    other = api.create_destination(other_ws, other_token, url=receiver.url)["id"]
    assert _test(api, other_ws, other_token, other).status_code == 200
    clock.now += 30
    assert _test(api, ws, token, dests[0]).status_code == 200


def test_refusals_of_test_sends_are_counted(api: ApiServer, receiver: Receiver) -> None:
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url)["id"]
    before = _metric(api, "auditrelay_api_rate_limited_total", limit="test_send_destination")
    assert _test(api, ws, token, dest).status_code == 200
    assert _test(api, ws, token, dest).status_code == 429
    after = _metric(api, "auditrelay_api_rate_limited_total", limit="test_send_destination")
    assert after == before + 1


def test_the_page_shows_a_refused_test_send_as_a_message(api: ApiServer, receiver: Receiver,
                                                         clock: ManualClock) -> None:
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url)["id"]
    page = PAGE.format(ws=ws)
    with sign_in(api, ws, token) as browser:
        for expected in ("delivered", "The test was not sent"):
            csrf = csrf_of(browser.get(page).text)
            sent = browser.post(f"{page}/destinations/{dest}/test", data={"csrf": csrf})
            assert sent.status_code == 303, sent.text
            shown = browser.get(page)
            assert shown.status_code == 200
            assert expected in shown.text, shown.text
        assert "try again in 5 s" in shown.text
    assert len(receiver.requests) == 1


# -- failed authentications ----------------------------------------------------------------


def _from(api: ApiServer, address: str) -> httpx.Client:
    return httpx.Client(base_url=api.base_url, timeout=30.0,
                        transport=httpx.HTTPTransport(local_address=address))


def test_the_11th_bad_token_in_a_minute_is_refused_even_when_right(api: ApiServer,
                                                                    clock: ManualClock) -> None:
    ws, token = api.create_workspace()
    path = f"/v1/workspaces/{ws}/destinations"
    failures = _metric(api, "auditrelay_api_auth_failures_total", via="bearer")
    refusals = _metric(api, "auditrelay_api_rate_limited_total", limit="auth_address")
    for n in range(10):
        assert api.call("GET", path, f"art_guess-{n}").status_code == 401
        clock.now += 1
    # The right token now: refused before it is looked at, or guessing would go on.
    message = _refused(api.call("GET", path, token), 59)  # 60 s from the 10th, at 1009
    assert "too many failed authentications from this address" in message
    assert _metric(api, "auditrelay_api_auth_failures_total", via="bearer") == failures + 10
    assert _metric(api, "auditrelay_api_rate_limited_total",
                   limit="auth_address") == refusals + 1

    # Another address is not held back, on this workspace or any other.
    with _from(api, "127.0.0.2") as elsewhere:
        mine = elsewhere.get(path, headers={"Authorization": f"Bearer {token}"})
        assert mine.status_code == 200, mine.text
        admin = elsewhere.post("/v1/workspaces", json={"name": "B", "plan": "enterprise"},
                               headers={"Authorization": f"Bearer {api.admin_token}"})
        assert admin.status_code == 201

    clock.now += 59
    assert api.call("GET", path, token).status_code == 200
    # A success clears nothing: the next failure is refused for twice as long.
    assert api.call("GET", path, "art_guess-again").status_code == 401
    _refused(api.call("GET", path, token), 120)


def test_guessing_a_workspace_from_many_addresses_is_held_back(api: ApiServer,
                                                               clock: ManualClock) -> None:
    ws, token = api.create_workspace()
    path = f"/v1/workspaces/{ws}/destinations"
    for n in range(10):
        with _from(api, f"127.0.1.{n + 1}") as guesser:
            guessed = guesser.get(path, headers={"Authorization": f"Bearer art_guess-{n}"})
            assert guessed.status_code == 401
    with _from(api, "127.0.1.3") as guesser:
        again = guesser.get(path, headers={"Authorization": "Bearer art_guess-again"})
        assert f"failed authentications for workspace {ws}" in _refused(again, 60)
    # The workspace's own client, which never failed, is not locked out by strangers.
    assert api.call("GET", path, token).status_code == 200


def test_the_sign_in_page_refuses_the_11th_attempt_in_a_minute(api: ApiServer,
                                                               clock: ManualClock) -> None:
    ws, token = api.create_workspace()
    login = PAGE.format(ws=ws) + "/login"
    failures = _metric(api, "auditrelay_api_auth_failures_total", via="sign_in")
    with httpx.Client(base_url=api.base_url, timeout=30.0) as browser:
        csrf = csrf_of(browser.get(login).text)
        for n in range(10):
            wrong = browser.post(login, data={"token": f"art_guess-{n}", "csrf": csrf})
            assert wrong.status_code == 401
        right = browser.post(login, data={"token": token, "csrf": csrf})
        assert right.status_code == 429
        assert right.headers["Retry-After"] == "60"
        assert "try again in 60 s" in right.text
        assert "ar_session" not in browser.cookies
    assert _metric(api, "auditrelay_api_auth_failures_total", via="sign_in") == failures + 10
    # The API's bearer tokens share the address's count.
    refused = api.call("GET", f"/v1/workspaces/{ws}/destinations", token)
    _refused(refused, 60)
    clock.now += 60
    with sign_in(api, ws, token):
        pass
