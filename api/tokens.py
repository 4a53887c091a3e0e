"""Bearer tokens: workspace tokens are random, shown once, and stored as SHA-256 hashes.

The admin token is a setting; ``check_admin_token`` refuses a weak one when the API starts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from ulid import ULID

from auditrelay.schemas.errors import ConfigurationError

TOKEN_PREFIX = "art_"  # noqa: S105 - a prefix, not a secret
#: The admin token creates workspaces and reads every workspace's audit log: it must
#: not be guessable. ``secrets.token_urlsafe(32)`` gives 43 characters.
MIN_ADMIN_TOKEN_LENGTH = 32
#: Values the documentation has shown as examples (docs/api.md showed ``change-me``):
#: copied as they are, they are the first guess of anyone who read it.
EXAMPLE_ADMIN_TOKENS = frozenset({"change-me"})
_HOW = ("set a random one of at least 32 characters, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))'")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


#: Characters of a token kept in clear, to tell a workspace's tokens apart in lists:
#: the fixed prefix and 8 random characters (48 bits, of the token's 256).
TOKEN_PREFIX_LENGTH = len(TOKEN_PREFIX) + 8


def token_prefix(token: str) -> str:
    return token[:TOKEN_PREFIX_LENGTH]


def new_token_id() -> str:
    return f"tok_{str(ULID()).lower()}"


def hash_token(token: str) -> str:
    # 256 random bits need no slow hash: nobody can guess a preimage.
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def check_admin_token(token: str | None) -> None:
    """Refuse an admin token that is an example or shorter than 32 characters.

    The message names the setting, never its value: it goes to logs and terminals.
    Unset (``None``) is fine: the admin API is then off.
    """
    if token is None:
        return
    if token.strip().lower() in EXAMPLE_ADMIN_TOKENS:
        raise ConfigurationError(
            f"AUDITRELAY_ADMIN_TOKEN is an example value from the documentation; {_HOW}")
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"AUDITRELAY_ADMIN_TOKEN is shorter than {MIN_ADMIN_TOKEN_LENGTH} characters; {_HOW}")
