"""DestinationRegistry: versions, tombstones, globs, filters, caching, snapshots."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import BrokerUnavailableError
from auditrelay.schemas.globs import GlobSet
from auditrelay.tables.registry import (
    DestinationRegistry,
    RegistryFollower,
    SharedFollower,
)


def config(dest_id: str = "dst_a", workspace: str = "ws_a", *, version: int = 1,
           enabled: bool = True, forwarding: bool = True,
           event_types: tuple[str, ...] = (), **extra: Any) -> DestinationConfig:
    values: dict[str, Any] = {
        "id": dest_id, "workspace_id": workspace, "name": f"name of {dest_id}",
        "url": "https://siem.example.com/in", "enabled": enabled, "event_types": event_types,
        "forwarding": forwarding, "secret_encrypted": "enc", "version": version,
        "updated_at": datetime(2026, 11, 25, tzinfo=UTC)}
    values.update(extra)
    return DestinationConfig(**values)


def raw(cfg: DestinationConfig) -> bytes:
    return cfg.model_dump_json().encode()


def ids(found: tuple[DestinationConfig, ...]) -> list[str]:
    return [c.id for c in found]


def test_apply_then_get_and_matching() -> None:
    registry = DestinationRegistry()
    assert registry.apply("dst_a", raw(config()))
    got = registry.get("dst_a")
    assert got is not None
    assert got.url == "https://siem.example.com/in"
    assert ids(registry.matching("ws_a", "pro.atmos.workspace.created")) == ["dst_a"]
    assert registry.get("dst_unknown") is None
    assert len(registry) == 1


def test_highest_version_wins_whatever_the_order() -> None:
    registry = DestinationRegistry()
    assert registry.apply("dst_a", raw(config(version=3, name="v3")))
    assert not registry.apply("dst_a", raw(config(version=2, name="v2")))
    assert not registry.apply("dst_a", raw(config(version=3, name="v3 again")))
    got = registry.get("dst_a")
    assert got is not None
    assert got.name == "v3"
    assert registry.apply("dst_a", raw(config(version=4, name="v4")))
    got = registry.get("dst_a")
    assert got is not None
    assert got.name == "v4"


def test_tombstone_deletes_and_a_later_create_counts() -> None:
    registry = DestinationRegistry()
    registry.apply("dst_a", raw(config(version=5)))
    assert registry.apply("dst_a", None)
    assert registry.get("dst_a") is None
    assert registry.matching("ws_a", "pro.atmos.x.y") == ()
    assert not registry.apply("dst_a", None)  # deleting twice changes nothing
    # After a delete, a record of any version is taken (a new destination with that id).
    assert registry.apply("dst_a", raw(config(version=1)))
    assert registry.get("dst_a") is not None


def test_undecodable_records_are_ignored_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = DestinationRegistry()
    registry.apply("dst_a", raw(config()))
    with caplog.at_level(logging.WARNING, logger="auditrelay.tables.registry"):
        assert not registry.apply("dst_a", b"{not json")
        assert not registry.apply("dst_a", b'{"id": "dst_a"}')
        assert not registry.apply("dst_a", b"\xff\xfe")
        assert not registry.apply("dst_b", raw(config("dst_c")))  # key and id differ
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4
    assert registry.get("dst_a") is not None  # the good record stays
    assert registry.get("dst_b") is None
    assert registry.get("dst_c") is None


def test_disabled_and_unentitled_destinations_are_never_matched() -> None:
    registry = DestinationRegistry()
    registry.apply("dst_on", raw(config("dst_on")))
    registry.apply("dst_off", raw(config("dst_off", enabled=False)))
    registry.apply("dst_free", raw(config("dst_free", forwarding=False)))
    assert ids(registry.matching("ws_a", "pro.atmos.auth.login")) == ["dst_on"]
    # get still returns them: delivery needs to know they are disabled.
    off = registry.get("dst_off")
    assert off is not None
    assert not off.enabled


def test_other_workspaces_are_not_matched() -> None:
    registry = DestinationRegistry()
    registry.apply("dst_a", raw(config("dst_a", "ws_a")))
    registry.apply("dst_b", raw(config("dst_b", "ws_b")))
    assert ids(registry.matching("ws_a", "pro.atmos.x.y")) == ["dst_a"]
    assert ids(registry.matching("ws_b", "pro.atmos.x.y")) == ["dst_b"]
    assert registry.matching("ws_c", "pro.atmos.x.y") == ()


@pytest.mark.parametrize(("globs", "event_type", "expected"), [
    ((), "pro.atmos.billing.invoice_paid", True),
    (("pro.atmos.billing.*",), "pro.atmos.billing.invoice_paid", True),
    (("pro.atmos.billing.*",), "pro.atmos.billing.", True),
    (("pro.atmos.billing.*",), "pro.atmos.billing", False),
    (("pro.atmos.billing.*",), "pro.atmos.billingx.paid", False),
    (("pro.atmos.billing.*",), "xpro.atmos.billing.paid", False),
    # `*` crosses dots.
    (("pro.atmos.*",), "pro.atmos.billing.invoice_paid", True),
    (("pro.*.created",), "pro.atmos.workspace.created", True),
    (("*.created",), "pro.atmos.workspace.created", True),
    (("*",), "anything.at.all", True),
    (("pro.atmos.auth.login",), "pro.atmos.auth.login", True),
    (("pro.atmos.auth.login",), "pro.atmos.auth.login_failed", False),
    (("pro.atmos.auth.login",), "pro.atmos.auth.logi", False),
    # The dot is literal, and so is anything else but `*`.
    (("pro.atmos.auth.log?n",), "pro.atmos.auth.login", False),
    (("pro.atmos.auth.log?n",), "pro.atmos.auth.log?n", True),
    (("pro.atmos.a.b",), "proXatmos.a.b", False),
    (("pro.atmos.[ab].x",), "pro.atmos.a.x", False),
    # Case-sensitive.
    (("pro.atmos.auth.*",), "PRO.ATMOS.AUTH.LOGIN", False),
    # Several globs: any one matching is enough.
    (("pro.atmos.auth.*", "pro.atmos.billing.*"), "pro.atmos.billing.paid", True),
    (("pro.atmos.auth.*", "pro.atmos.billing.*"), "pro.atmos.lock.acquired", False),
])
def test_globs(globs: tuple[str, ...], event_type: str, expected: bool) -> None:
    registry = DestinationRegistry()
    registry.apply("dst_a", raw(config(event_types=globs)))
    assert bool(registry.matching("ws_a", event_type)) is expected
    compiled = GlobSet.compile(globs)
    assert (compiled is None or compiled.matches(event_type)) is expected


def test_several_destinations_in_id_order() -> None:
    registry = DestinationRegistry()
    for dest_id in ("dst_c", "dst_a", "dst_b"):
        registry.apply(dest_id, raw(config(dest_id)))
    registry.apply("dst_d", raw(config("dst_d", event_types=("pro.atmos.billing.*",))))
    assert ids(registry.matching("ws_a", "pro.atmos.auth.login")) == ["dst_a", "dst_b", "dst_c"]
    assert ids(registry.matching("ws_a", "pro.atmos.billing.paid")) == [
        "dst_a", "dst_b", "dst_c", "dst_d"]


def test_cache_is_invalidated_by_every_change() -> None:
    registry = DestinationRegistry()
    registry.apply("dst_a", raw(config(event_types=("pro.atmos.auth.*",))))
    first = registry.matching("ws_a", "pro.atmos.auth.login")
    assert ids(first) == ["dst_a"]
    assert registry.matching("ws_a", "pro.atmos.auth.login") is first  # cached
    registry.apply("dst_a", raw(config(version=2, event_types=("pro.atmos.billing.*",))))
    assert registry.matching("ws_a", "pro.atmos.auth.login") == ()
    registry.apply("dst_a", raw(config(version=3, enabled=False,
                                       event_types=("pro.atmos.billing.*",))))
    assert registry.matching("ws_a", "pro.atmos.billing.paid") == ()
    registry.apply("dst_a", raw(config(version=4)))
    assert ids(registry.matching("ws_a", "pro.atmos.billing.paid")) == ["dst_a"]
    registry.apply("dst_a", None)
    assert registry.matching("ws_a", "pro.atmos.billing.paid") == ()


def test_readers_never_go_back_in_time_while_a_writer_changes_the_registry() -> None:
    # Each version flips the destination between two type filters. Readers on other
    # threads must never fail, never see the destination vanish, never see an older
    # version after a newer one; and once the writer is done, every answer is current
    # (no cache entry of an old snapshot survives).
    registry = DestinationRegistry()
    registry.apply("dst_a", raw(config(event_types=("pro.atmos.a.*",))))
    stop = threading.Event()
    bad: list[str] = []

    def read() -> None:
        seen = 0
        try:
            while not stop.is_set():
                registry.matching("ws_a", "pro.atmos.a.x")
                registry.matching("ws_a", "pro.atmos.b.x")
                got = registry.get("dst_a")
                if got is None or got.version < seen:
                    bad.append(f"saw {got} after version {seen}")
                    return
                seen = got.version
        except Exception as exc:  # pragma: no cover - reported below
            bad.append(repr(exc))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    for version in range(2, 2000):
        glob = "pro.atmos.a.*" if version % 2 else "pro.atmos.b.*"
        registry.apply("dst_a", raw(config(version=version, event_types=(glob,))))
    stop.set()
    for thread in readers:
        thread.join()
    assert bad == []
    # The last version (1999, odd) wants pro.atmos.a.*.
    assert ids(registry.matching("ws_a", "pro.atmos.b.x")) == []
    assert ids(registry.matching("ws_a", "pro.atmos.a.x")) == ["dst_a"]


def test_all_lists_every_destination() -> None:
    registry = DestinationRegistry()
    registry.apply("dst_b", raw(config("dst_b", enabled=False)))
    registry.apply("dst_a", raw(config("dst_a")))
    assert [c.id for c in registry.all()] == ["dst_a", "dst_b"]


def test_follower_wait_times_out_with_broker_unavailable() -> None:
    # Never started: nothing can catch up, and the error says so.
    follower = RegistryFollower("127.0.0.1:1", "audit.destinations")
    with pytest.raises(BrokerUnavailableError, match=r"audit\.destinations"):
        follower.wait_caught_up(0.05)
    assert not follower.caught_up
    follower.stop()  # stopping a follower that never started is fine


class TaskRecorder:
    """What ``SharedFollower`` needs of a Faust app: ``task``, recorded, never run."""

    def __init__(self) -> None:
        self.tasks: list[Any] = []

    def task(self, fun: Any) -> Any:
        self.tasks.append(fun)
        return fun


def test_a_shared_follower_is_made_once_per_app_and_only_when_asked_for() -> None:
    app = TaskRecorder()
    shared = SharedFollower(app, "127.0.0.1:1", "audit.destinations")
    assert app.tasks == []  # a worker whose stages need no destinations reads no topic
    first = shared.get()
    assert shared.get() is first
    assert len(app.tasks) == 1  # one thread per worker, started and stopped by that task
    assert (first.bootstrap, first.topic) == ("127.0.0.1:1", "audit.destinations")
    assert not first.running
    other = SharedFollower(TaskRecorder(), "127.0.0.1:1", "audit.destinations")
    assert other.get() is not first  # another app, another follower


def test_apply_many_is_apply_in_order_with_one_snapshot() -> None:
    registry = DestinationRegistry()
    before = registry._snapshot
    changed = registry.apply_many([
        ("dst_a", raw(config(version=1, name="v1"))),
        ("dst_b", raw(config("dst_b", version=1))),
        ("dst_a", raw(config(version=3, name="v3"))),
        ("dst_a", raw(config(version=2, name="v2"))),  # older: ignored
        ("dst_b", None),                                # deleted in the same batch
        ("dst_c", b"not json"),                         # logged and ignored
        ("dst_gone", None),                             # nothing to delete
    ])
    assert changed == 4  # dst_a twice, dst_b made and deleted
    assert registry._snapshot is not before
    a = registry.get("dst_a")
    assert a is not None
    assert a.name == "v3"
    assert registry.get("dst_b") is None
    assert [c.id for c in registry.matching("ws_a", "pro.atmos.auth.login_succeeded")] == ["dst_a"]
    # A workspace left without destinations has no routes left either.
    assert registry.apply("dst_a", None)
    assert registry.matching("ws_a", "pro.atmos.auth.login_succeeded") == ()
    assert registry._snapshot.routes == {}


def test_deletions_are_remembered_apart_from_ids_never_seen() -> None:
    registry = DestinationRegistry()
    registry.apply("dst_a", raw(config("dst_a")))
    registry.apply("dst_a", None)
    registry.apply("dst_b", None)  # its config compacted away: only the tombstone is left
    assert registry.deleted("dst_a")
    assert registry.deleted("dst_b")
    assert not registry.deleted("dst_new")  # maybe not here yet: delivery waits for it
    assert registry.get("dst_a") is None
    registry.apply("dst_a", raw(config("dst_a")))  # made again
    assert not registry.deleted("dst_a")
