"""The docs tell users what the code does: settings, commands and contract in step."""

from __future__ import annotations

from pathlib import Path

from auditrelay.schemas.settings import DEFAULT_KAFKA_VERSION, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme[: readme.index("## ")]
    assert "make run" in head
    assert "make test" in head


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f"AUDITRELAY_{name.upper()}" for name in Settings.model_fields
               if f"`AUDITRELAY_{name.upper()}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


def test_docs_name_the_default_kafka_version() -> None:
    assert f"## Version: {DEFAULT_KAFKA_VERSION}" in (ROOT / "docs" / "kafka.md").read_text()
    assert f"`{DEFAULT_KAFKA_VERSION}`" in (ROOT / "README.md").read_text()


def test_contract_copy_matches_the_shared_contract_when_present() -> None:
    shared = ROOT.parent / "shared" / "contract.md"
    ours = (ROOT / "docs" / "contract.md").read_text()
    assert "## 7. Operator interface" in ours
    if shared.exists():
        body = shared.read_text().split("\n", 1)[1]
        assert body in ours, "docs/contract.md no longer carries the shared contract"
