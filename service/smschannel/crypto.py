"""Encryption at rest of provider tokens, and the secret key it uses."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["TokenCipher", "load_or_create_secret_key"]


def load_or_create_secret_key(configured: str | None, path: Path) -> str:
    """The configured key, else the one in `path`, else a new one written there (mode 0600)."""
    if configured:
        return configured
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    # Server and sidecar may start together: write a temporary file, then link it into place, so
    # the first one wins and the other reads a complete key.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


class TokenCipher:
    """Authenticated encryption (Fernet) keyed by SHA-256 of the secret key."""

    def __init__(self, secret_key: str) -> None:
        derived = hashlib.sha256(b"smschannel token cipher v1:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, plain: str) -> bytes:
        """Encrypt a token for storage."""
        return self._fernet.encrypt(plain.encode())

    def decrypt(self, stored: bytes) -> str:
        """Decrypt a stored token; ValueError if the key changed or the data was tampered with."""
        try:
            return self._fernet.decrypt(stored).decode()
        except InvalidToken as e:
            raise ValueError("the stored token cannot be decrypted with this secret key") from e
