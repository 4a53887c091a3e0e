"""A weak admin token keeps the API from starting (issue #11).

The admin token creates workspaces and reads every workspace's audit log
(docs/api.md). ``create_app`` refuses one shorter than 32 characters or equal to an
example of the documentation with a ``ConfigurationError`` that names the setting but
never its value; ``auditrelay api`` then exits with that one line.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from auditrelay.api.app import create_app
from auditrelay.api.tokens import EXAMPLE_ADMIN_TOKENS
from auditrelay.schemas.errors import ConfigurationError
from auditrelay.store.engine import upgrade_database
from tests.integration.api.conftest import MakeApi
from tests.support.settings import make_settings

SETTING = "AUDITRELAY_ADMIN_TOKEN"
SHORT = secrets.token_hex(15)  # 30 random characters: random, but too short
_DEADLINE = 60.0


def _refusal(tmp_path: Path, token: str) -> str:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade_database(url)  # so that nothing but the token can stop the app
    settings = make_settings(tmp_path, "127.0.0.1:9092", "test.unused.", database_url=url,
                             admin_token=token)
    with pytest.raises(ConfigurationError) as refused:
        create_app(settings, publish=False)
    message = str(refused.value)
    assert SETTING in message
    assert token not in message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("token", [SHORT, "x", " " * 31, SHORT + "a"],
                         ids=["30-random", "1-char", "31-spaces", "31-random"])
def test_a_short_admin_token_is_refused(tmp_path: Path, token: str) -> None:
    assert "32 characters" in _refusal(tmp_path, token)


@pytest.mark.parametrize("token", sorted(EXAMPLE_ADMIN_TOKENS))
def test_a_documented_example_is_refused(tmp_path: Path, token: str) -> None:
    assert "example" in _refusal(tmp_path, token)
    assert "example" in _refusal(tmp_path, token.upper())


def test_the_documentation_shows_no_literal_admin_token() -> None:
    docs = Path(__file__).parents[2] / "docs" / "api.md"
    text = docs.read_text()
    for example in EXAMPLE_ADMIN_TOKENS:
        assert f"Bearer {example}" not in text
        assert f"{SETTING}={example}" not in text


def test_a_random_token_of_32_characters_or_more_works(make_api: MakeApi) -> None:
    for token in (secrets.token_hex(16), secrets.token_urlsafe(32)):
        assert len(token) >= 32
        api = make_api(admin_token=token)
        created = api.call("POST", "/v1/workspaces", token,
                           json={"name": "Acme", "plan": "enterprise"})
        assert created.status_code == 201, created.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_api_command_exits_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade_database(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    env.update({"AUDITRELAY_DATABASE_URL": url, "AUDITRELAY_VAR_DIR": str(tmp_path),
                "AUDITRELAY_LOG_LEVEL": "WARNING", SETTING: SHORT})
    # A server that starts anyway runs until the deadline: TimeoutExpired fails the test.
    done = subprocess.run([sys.executable, "-m", "auditrelay.ops", "api", "--port",
                           str(_free_port())], env=env, capture_output=True, text=True,
                          timeout=_DEADLINE, check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert SETTING in lines[0]
    assert SHORT not in done.stderr + done.stdout
