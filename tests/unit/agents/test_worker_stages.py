from __future__ import annotations

from agents import archive, pipeline, retention, router
from agents.app import default_registrars, worker_app_id
from schemas.topics import TopicNames


def test_every_stage_by_default() -> None:
    assert default_registrars() == [router.register, archive.register, retention.register,
                                    pipeline.register]


def test_only_the_chosen_stages() -> None:
    assert default_registrars(("archive",)) == [archive.register]
    assert default_registrars(("router", "delivery")) == [router.register, pipeline.register]


def test_an_archive_only_worker_has_a_group_of_its_own() -> None:
    names = TopicNames()
    assert worker_app_id(names, ("router", "archive", "delivery")) == "auditrelay"
    assert worker_app_id(names, ("router",)) == "auditrelay"
    assert worker_app_id(names, ("archive", "retention")) == "auditrelay-archive"
    assert worker_app_id(TopicNames("t."), ("archive",)) == "auditrelay-archive-t"
