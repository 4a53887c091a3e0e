"""``auditrelay emit`` and ``auditrelay bench produce`` against the real broker."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from auditrelay.ops.cli import cli
from auditrelay.ops.commands import all_commands
from auditrelay.schemas.codec import parse_event
from tests.integration.test_producer import consume_all

TopicFactory = Callable[..., str]
EVENT = {"workspace_id": "ws_cli", "category": "workspace", "action": "created",
         "actor": {"id": "usr_cli", "type": "user"},
         "target": {"type": "workspace", "id": "ws_cli"}, "metadata": {"via": "cli"}}


@pytest.fixture(scope="module", autouse=True)
def _commands() -> None:
    for command in all_commands():
        cli.add_command(command)


def run(bootstrap: str, args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, input=stdin,
                                env={"AUDITRELAY_KAFKA_BOOTSTRAP": bootstrap})
    return result.exit_code, result.stdout, result.stderr


def test_emit_from_an_argument_with_count(kafka_bootstrap: str,
                                          make_topic: TopicFactory) -> None:
    topic = make_topic(partitions=1)
    code, out, err = run(kafka_bootstrap, ["emit", json.dumps(EVENT), "--topic", topic,
                                           "--count", "3"])
    assert code == 0, err
    ids = out.split()
    assert len(ids) == 3
    assert "emitted 3 event(s)" in err
    records = consume_all(kafka_bootstrap, topic, expected=3)
    events = [parse_event(msg.value()) for msg in records]
    assert [e.id for e in events] == ids
    assert {e.data.metadata["via"] for e in events} == {"cli"}


def test_emit_reads_json_lines_from_stdin_at_a_rate(kafka_bootstrap: str,
                                                    make_topic: TopicFactory) -> None:
    topic = make_topic(partitions=1)
    lines = "\n".join(json.dumps({**EVENT, "workspace_id": f"ws_in{i}"}) for i in range(4))
    code, out, err = run(kafka_bootstrap, ["emit", "--topic", topic, "--rate", "200", "-q"],
                         stdin=lines + "\n\n")
    assert code == 0, err
    assert out == ""
    records = consume_all(kafka_bootstrap, topic, expected=4)
    assert sorted(msg.key() for msg in records) == [f"ws_in{i}".encode() for i in range(4)]


@pytest.mark.parametrize(("data", "message"), [
    ({**EVENT, "actor": None}, "data.actor"),
    ({**EVENT, "workspace_id": "nope"}, "workspaceid"),
    ({**EVENT, "colour": "red"}, "unknown keys colour"),
    ({k: v for k, v in EVENT.items() if k != "category"}, "missing category"),
])
def test_emit_refuses_bad_events_with_a_clear_message(kafka_bootstrap: str,
                                                      make_topic: TopicFactory, group_id: str,
                                                      data: dict[str, object],
                                                      message: str) -> None:
    topic = make_topic(partitions=1)
    code, _, err = run(kafka_bootstrap, ["emit", json.dumps(data), "--topic", topic])
    assert code != 0
    assert message in err


def test_bench_produce_reports_a_rate(kafka_bootstrap: str) -> None:
    code, out, err = run(kafka_bootstrap, ["bench", "produce", "--events", "3000"])
    assert code == 0, err
    match = re.search(r"([\d,]+) events/s", out)
    assert match is not None, out
    assert int(match.group(1).replace(",", "")) > 0
