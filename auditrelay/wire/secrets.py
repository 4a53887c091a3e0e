"""Encryption at rest of signing secrets and custom header values.

``SecretBox`` encrypts with Fernet (AES-128-CBC + HMAC-SHA256, authenticated)
and prefixes each ciphertext with a format version (``v1:``), so the scheme can
change later without guessing what a stored value is. The first key encrypts;
``previous_keys`` only decrypt, which is how a key is rotated: add the new key
first, re-encrypt with ``rotate``, then drop the old one.

The key comes from the ``AUDITRELAY_SECRET_KEY`` setting, read by the entry
point; in development ``load_or_create_dev_key`` keeps one under ``var/``.
Nothing here reads the environment, and no message or repr contains a key,
a plaintext or a ciphertext.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import typing
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from auditrelay.schemas.errors import ConfigurationError, SecretDecryptError

if typing.TYPE_CHECKING:
    from auditrelay.schemas.settings import Settings

__all__ = [
    "DEV_KEY_FILENAME",
    "SecretBox",
    "box_from_settings",
    "generate_key",
    "load_or_create_dev_key",
]

log = logging.getLogger(__name__)

DEV_KEY_FILENAME = "secret.key"
_PREFIX = "v1:"


def generate_key() -> str:
    """A new key: url-safe base64 of 32 random bytes (a Fernet key)."""
    return Fernet.generate_key().decode("ascii")


def _fernet(key: str | bytes) -> Fernet:
    try:
        return Fernet(key.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            "secret key (AUDITRELAY_SECRET_KEY) must be url-safe base64 of 32 bytes; "
            "create one with `python -c 'from auditrelay.wire.secrets import generate_key; "
            "print(generate_key())'`"
        ) from exc


class SecretBox:
    """Encrypts and decrypts short strings with the current key and older ones."""

    __slots__ = ("_box", "_key_count")

    def __init__(self, key: str | bytes, *, previous_keys: Sequence[str | bytes] = ()) -> None:
        self._box = MultiFernet([_fernet(k) for k in (key, *previous_keys)])
        self._key_count = 1 + len(previous_keys)

    def __repr__(self) -> str:
        return f"SecretBox(<{self._key_count} key(s) hidden>)"

    def encrypt(self, plaintext: str) -> str:
        """``v1:`` + a Fernet token of ``plaintext`` under the current key."""
        return _PREFIX + self._box.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext of ``ciphertext``; ``SecretDecryptError`` if it cannot be had."""
        if not isinstance(ciphertext, str) or not ciphertext.startswith(_PREFIX):
            raise SecretDecryptError("encrypted value has an unknown format (expected v1:...)")
        try:
            data = self._box.decrypt(ciphertext[len(_PREFIX):].encode("ascii"))
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise SecretDecryptError(
                "encrypted value could not be decrypted: wrong secret key, or corrupted data"
            ) from exc
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SecretDecryptError("decrypted value is not UTF-8 text") from exc

    def rotate(self, ciphertext: str) -> str:
        """``ciphertext`` re-encrypted under the current key."""
        return self.encrypt(self.decrypt(ciphertext))


def load_or_create_dev_key(var_dir: Path) -> tuple[str, bool]:
    """The development key in ``var_dir/secret.key``, created (mode 0600) if absent.

    Returns ``(key, created)``; the caller logs a warning when it was created.
    Safe when several processes start at once: the file is published with a
    hard link, which never replaces an existing key, so every process ends up
    with the same key.
    """
    var_dir = Path(var_dir)
    path = var_dir / DEV_KEY_FILENAME
    created = False
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = var_dir / f".{DEV_KEY_FILENAME}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(generate_key() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
                created = True
        finally:
            tmp.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # A key readable by others is as good as published; tighten, don't refuse.
        path.chmod(0o600)
    try:
        key = path.read_text(encoding="ascii").strip()
        _fernet(key)
    except (UnicodeDecodeError, ConfigurationError) as exc:
        raise ConfigurationError(
            f"{path} does not hold a valid secret key; restore it, or delete it to have a "
            "new one generated (values encrypted with the old key are then lost)"
        ) from exc
    return key, created


def secret_key_of(settings: Settings) -> str:
    """The encryption key of secrets at rest: the setting, or a development key (warned)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    key, created = load_or_create_dev_key(settings.var_dir)
    log.warning("AUDITRELAY_SECRET_KEY is not set: using the development key in %s%s; "
                "set the variable in production", settings.var_dir,
                " (just generated)" if created else "")
    return key


def box_from_settings(settings: Settings) -> SecretBox:
    """The box of secrets at rest, under ``secret_key_of(settings)``."""
    return SecretBox(secret_key_of(settings))
