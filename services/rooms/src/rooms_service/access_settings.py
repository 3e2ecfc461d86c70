"""Who may come into the rooms service: room passwords, identity tokens, display names, the HTTP API's
keys (and their rate) and the throttle on failed attempts. Part of ``RoomsSettings`` (``settings.py``),
read from the environment with it; the files (mounted Secrets) are read at start."""

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class AccessSettings(BaseModel):
    """A part of ``RoomsSettings``, not a settings class of its own (the environment is read there)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    # Room id -> password (plain text or a salted hash, see guard.py); a room not listed is open.
    room_passwords: dict[str, str] = {}
    """JSON: room id to password, plain or `pbkdf2_sha256$...` (`.venv/bin/python -m
    rooms_service.hash_password`); rooms not listed are open; an invalid room id or a malformed hash stops
    the service at start.
    """
    # A JSON file of the same shape (a mounted Kubernetes Secret); its entries win over ROOM_PASSWORDS.
    room_passwords_file: Path | None = None
    """Path of a JSON file of the same shape (a mounted Secret); its entries win; read at start."""

    # Identity tokens (tokens.py): HS256 JWTs checked with TOKEN_SECRET (at least 32 bytes), RS256 or
    # ES256 ones with TOKEN_PUBLIC_KEY (PEM; or TOKEN_PUBLIC_KEY_FILE). Neither set: tokens are refused.
    token_secret: SecretStr | None = None
    """HS256 key for identity tokens (at least 32 bytes); with neither this nor a public key every token gets
    4001.
    """
    token_public_key: str | None = None
    """PEM public key for RS256 (RSA) or ES256 (P-256) identity tokens; a bad key stops the service at start.
    """
    token_public_key_file: Path | None = None
    """Path of that PEM (a mounted Secret); wins over `TOKEN_PUBLIC_KEY`; read at start."""
    # When set, a token's ``aud`` / ``iss`` must be this.
    token_audience: str | None = None
    """When set, a token's `aud` must be it."""
    token_issuer: str | None = None
    """When set, a token's `iss` must be it."""
    # Seconds of clock difference allowed when checking ``exp`` (and ``nbf``/``iat``).
    token_leeway: float = Field(default=0.0, ge=0, le=300)
    """Seconds of clock difference allowed on `exp` (0 to 300)."""
    # Members without a token may pick a display name (?name=, unverified: shown without ``user``).
    room_display_names: bool = True
    """Members without a token may show a `?name=` (unverified); `false`: 1008."""

    # Keys of the HTTP API (api.py, ``Authorization: Bearer <key>``): a JSON list of plain keys or salted
    # hashes (as passwords); none: the API answers 401 to everyone. Also from a JSON file (a Secret).
    publish_api_keys: list[str] = []
    """JSON list of the HTTP API's keys (`Authorization: Bearer`), plain or `pbkdf2_sha256$...`; none: the
    API answers 401; a malformed hash stops the service at start.
    """
    publish_api_keys_file: Path | None = None
    """Path of a JSON file with more keys (a mounted Secret); read at start."""
    # Per key and per replica: a token bucket of ``publish_rate`` requests a second, ``publish_burst`` saved.
    publish_rate: float = Field(default=200.0, gt=0)
    """Requests a second one API key may make, per replica (token bucket); over it 429."""
    publish_burst: int = Field(default=400, ge=1)
    """Requests one API key may make at once before the rate applies, per replica."""

    # Failed password attempts per (client address, room) inside the window before every further
    # attempt is refused without checking, until the window has passed.
    auth_max_failures: int = Field(default=5, ge=1)
    """Failed password or token attempts per (client address, room) within the window before further attempts
    get 4003 unchecked; also wrong API keys per client address before 429.
    """
    auth_failure_window: float = Field(default=60.0, gt=0)
    """Seconds the failures are remembered."""

    def public_key(self) -> str | None:
        """TOKEN_PUBLIC_KEY, or the PEM in TOKEN_PUBLIC_KEY_FILE (read at start)."""
        if self.token_public_key_file is not None:
            return self.token_public_key_file.read_text(encoding="ascii")
        return self.token_public_key

    def passwords(self) -> dict[str, str]:
        """ROOM_PASSWORDS merged with ROOM_PASSWORDS_FILE (read at start: restart for a rotated Secret)."""
        merged = dict(self.room_passwords)
        if self.room_passwords_file is not None:
            data = json.loads(self.room_passwords_file.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()
            ):
                raise ValueError(f"{self.room_passwords_file} must hold a JSON object of room id -> password")
            merged.update(data)
        return merged

    def api_keys(self) -> list[str]:
        """PUBLISH_API_KEYS and then PUBLISH_API_KEYS_FILE's (read at start: restart for a rotated Secret)."""
        keys = list(self.publish_api_keys)
        if self.publish_api_keys_file is not None:
            data = json.loads(self.publish_api_keys_file.read_text(encoding="utf-8"))
            if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
                raise ValueError(f"{self.publish_api_keys_file} must hold a JSON list of API keys")
            keys += data
        return keys
