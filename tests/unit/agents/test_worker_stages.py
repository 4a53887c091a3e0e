from __future__ import annotations

from auditrelay.agents import archive, pipeline, retention, router
from auditrelay.agents.app import default_registrars
from auditrelay.schemas.topics import TopicNames


def test_every_stage_by_default() -> None:
    assert default_registrars() == [router.register, archive.register, retention.register,
                                    pipeline.register]


def test_only_the_chosen_stages() -> None:
    assert default_registrars(("archive",)) == [archive.register]
    assert default_registrars(("router", "delivery")) == [router.register, pipeline.register]


def test_routing_and_archiving_read_in_groups_of_their_own() -> None:
    names = TopicNames("t.")
    groups = {names.router_group, names.archive_group,
              names.app_group}  # the last is the Faust app's (leader election)
    assert groups == {"auditrelay-router-t", "auditrelay-archive-t", "auditrelay-t"}
