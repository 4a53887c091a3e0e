"""Deleting a test's topics when it ends: every topic its prefix owns, whoever made them.

A test's topics are not only those it created itself: ``ensure_topics``, the outbox
(the topic entries of old databases) and Faust (internal topics named after the app
id) make more. So the cleanup lists the broker's topics at the end and deletes every one the
test's ``TopicNames`` own (``TopicNames.owns``), plus any other prefixes it names
(a Faust app id of its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka.admin import AdminClient

from auditrelay.kafka.admin import delete_topics
from auditrelay.schemas.topics import TopicNames

__all__ = ["delete_owned_topics", "topics_cleaned_up"]


def delete_owned_topics(admin: AdminClient, names: TopicNames, *also: str) -> None:
    """Delete every topic that ``names`` owns or whose name starts with one of ``also``."""
    existing = admin.list_topics(timeout=30).topics
    delete_topics(admin, sorted(topic for topic in existing
                                if names.owns(topic) or topic.startswith(also)))


@contextmanager
def topics_cleaned_up(admin: AdminClient, names: TopicNames, *also: str) -> Iterator[None]:
    """On the way out, however it is left: ``delete_owned_topics(admin, names, *also)``."""
    try:
        yield
    finally:
        delete_owned_topics(admin, names, *also)
