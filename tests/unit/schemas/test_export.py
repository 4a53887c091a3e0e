"""The committed JSON Schema files and docs/events.md match the models and the catalogue."""

from __future__ import annotations

import json
from pathlib import Path

from auditrelay.schemas.catalogue import DEFAULT_CATALOGUE
from auditrelay.schemas.export import REPO_ROOT, event_schema, events_markdown, main, stale_files


def test_generated_files_are_up_to_date() -> None:
    stale = stale_files()
    assert stale == [], "run `python -m auditrelay.schemas.export` and commit the result"


def test_json_schema_lists_every_catalogued_type() -> None:
    on_disk = json.loads((REPO_ROOT / "schemas/json/audit-event.schema.json").read_text())
    assert on_disk == event_schema()
    assert set(on_disk["properties"]["type"]["enum"]) == set(DEFAULT_CATALOGUE.type_names(
        "pro.atmos"))
    assert on_disk["properties"]["workspaceid"]["pattern"] == "^ws_[a-z0-9]{1,40}$"
    assert set(on_disk["required"]) >= {"specversion", "id", "source", "type", "time",
                                        "workspaceid", "data"}


def test_events_doc_has_a_row_per_type() -> None:
    doc = events_markdown()
    for name in DEFAULT_CATALOGUE.type_names("pro.atmos"):
        assert f"| `{name}` |" in doc


def test_generator_writes_then_reports_nothing_stale(tmp_path: Path) -> None:
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "docs/events.md").read_text() == events_markdown()
