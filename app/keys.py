"""API keys: who is calling. Taught in 18_team-service.ipynb.

Keys are bearer tokens (`Authorization: Bearer <key>`), stored only as SHA-256 hashes in the state folder
(api-keys.json), compared in constant time (hmac.compare_digest). No key: 401 with WWW-Authenticate; a wrong key: 403.
WORKSHOP_API_KEYS=1 turns them on; off by default (the lessons serve on 127.0.0.1 only).

    python -m app.keys add alice      # prints alice's new key once; only its hash is kept
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
import threading
from pathlib import Path

from fastapi import HTTPException, Request

ANONYMOUS = "anonymous"  # the caller's name while keys are off: limits then apply to everyone together
KEYS_FILE = "api-keys.json"


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of a key: what is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Named API keys, hashed, in a JSON file {name: sha256 hex}."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def hashes(self) -> dict[str, str]:
        """name -> hash, as stored ({} before the first key)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def add(self, name: str) -> str:
        """Make a new key for name (replacing its old one) and return it: the only time it is seen."""
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"key name {name!r}: use letters, digits, '-' or '_'")
        key = "rag-" + secrets.token_urlsafe(24)
        with self._lock:
            hashes = {**self.hashes(), name: hash_key(key)}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(hashes, indent=1) + "\n", encoding="utf-8")
            tmp.chmod(0o600)
            tmp.replace(self.path)
        return key

    def owner(self, key: str) -> str | None:
        """The name whose key this is, or None; every stored hash is compared, in constant time."""
        wanted, found = hash_key(key), None
        for name, stored in self.hashes().items():
            if hmac.compare_digest(wanted, stored):
                found = name
        return found


def bearer(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def caller(request: Request) -> str:
    """FastAPI dependency: the calling key's name (ANONYMOUS while keys are off); 401 without a key, 403 for a wrong one."""
    svc = request.app.state.service
    store: KeyStore | None = svc.keys
    if store is None:
        return ANONYMOUS
    token = bearer(request)
    if token is None:
        svc.limits.refused.labels("no_key").inc()
        raise HTTPException(
            401,
            "This service needs an API key: send `Authorization: Bearer <key>`. An operator makes one with "
            "`python -m app.keys add NAME`.",
            headers={"WWW-Authenticate": 'Bearer realm="rag"'},
        )
    name = store.owner(token)
    if name is None:
        svc.limits.refused.labels("wrong_key").inc()
        raise HTTPException(403, "This API key is not known here: check it, or ask an operator for a new one.")
    return name


def main(argv: list[str]) -> int:
    """`add NAME`: make a key in the state folder's api-keys.json and print it once."""
    if len(argv) != 2 or argv[0] != "add":
        print("usage: python -m app.keys add NAME", file=sys.stderr)
        return 2
    from helpers.config import read_settings

    store = KeyStore(read_settings().state_dir / KEYS_FILE)
    try:
        key = store.add(argv[1])
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(key)
    print(f"(the key for {argv[1]!r}, shown once; {store.path} keeps only its SHA-256 hash)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
