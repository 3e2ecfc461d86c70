"""Identity tokens: JWTs minted by the app's own login, verified here with PyJWT.

A token names its user (``sub``), optionally a display ``name``, the rooms it may join (``rooms``: a list
of room ids, or ``"*"``) and when it expires (``exp``, required). HS256 tokens are checked with
``TOKEN_SECRET``; RS256 or ES256 tokens with ``TOKEN_PUBLIC_KEY`` (PEM), the algorithm fixed by the key's
type. Each algorithm has its own key, chosen by the token's header, so an RS256 public key can never be
used as an HMAC secret (the classic algorithm-confusion attack). Nothing here logs or raises with a token
in it: an ``InvalidToken`` carries only the reason's class name.
"""

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

MAX_USER_LENGTH = 128
MAX_NAME_LENGTH = 64


class InvalidToken(ValueError):
    """Expired, forged, malformed, for another room, or tokens are not configured here."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    name: str | None
    rooms: frozenset[str] | None  # None: every room
    # When the token expires (Unix seconds): the member is closed then (4002). Not part of who it is.
    exp: float | None = field(default=None, compare=False)

    def may_join(self, room_id: str) -> bool:
        return self.rooms is None or room_id in self.rooms


def display_name(value: object) -> str | None:
    """A display name as members see it: 1 to 64 printable characters, surrounding spaces trimmed;
    None for anything else."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not 0 < len(value) <= MAX_NAME_LENGTH or not value.isprintable():
        return None
    return value


def algorithm_for(key: object) -> str | None:
    """The one JWT algorithm a key (public or private half) is for: RS256 for RSA, ES256 for P-256."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return "ES256"
    return None


def _public_key_algorithm(pem: str) -> str:
    algorithm = algorithm_for(load_pem_public_key(pem.encode("ascii")))
    if algorithm is None:
        raise ValueError("TOKEN_PUBLIC_KEY must be an RSA or a P-256 (ES256) public key in PEM")
    return algorithm


class TokenVerifier:
    """Checks tokens against the configured keys; with none configured every token is refused."""

    def __init__(
        self,
        secret: str | None = None,
        public_key: str | None = None,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        self._keys: dict[str, Any] = {}
        if secret:
            if len(secret.encode("utf-8")) < 32:  # RFC 7518 3.2: an HS256 key at least as long as the hash
                raise ValueError("TOKEN_SECRET must be at least 32 bytes")
            self._keys["HS256"] = secret
        if public_key:
            self._keys[_public_key_algorithm(public_key)] = public_key  # a bad PEM fails here, at start
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    @property
    def algorithms(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, token: str) -> Identity:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
            if key is None:
                raise InvalidToken("NoKeyForAlgorithm")
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        return _identity(claims)


def _identity(claims: Mapping[str, Any]) -> Identity:
    user = claims.get("sub")
    if not isinstance(user, str) or not 0 < len(user) <= MAX_USER_LENGTH or not user.isprintable():
        raise InvalidToken("InvalidSubject")
    name = claims.get("name")
    if name is not None:
        name = display_name(name)
        if name is None:
            raise InvalidToken("InvalidName")
    exp = claims.get("exp")
    exp = exp if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    rooms = claims.get("rooms")
    if rooms == "*" or (isinstance(rooms, list) and "*" in rooms):
        return Identity(user, name, None, exp)
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise InvalidToken("InvalidRooms")
    return Identity(user, name, frozenset(rooms), exp)


class Lifetime:
    """A token member's time left: ``expired()`` is called when its token's ``exp`` (plus the leeway)
    passes, unless ``refresh`` moved it on first. ``refresh(token)`` checks a new token (valid, the same
    ``sub``, this room) and returns its ``exp``; ``InvalidToken`` leaves the old expiry standing.
    ``cancel()`` when the member leaves. Used the same way by every kind of join; a ``/ws`` connection
    has no room of its own (``room_id`` None) and names the rooms it is in at each ``refresh``."""

    def __init__(
        self,
        verifier: TokenVerifier,
        identity: Identity,
        room_id: str | None,
        expired: Callable[[], None],
        *,
        leeway: float = 0.0,
    ) -> None:
        self._verifier = verifier
        self._user = identity.user
        self._room = room_id
        self._expired = expired
        self._leeway = leeway
        self._timer: asyncio.TimerHandle | None = None
        self.exp = identity.exp
        self.identity = identity  # the newest token's
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.exp is not None:
            delay = max(0.0, self.exp + self._leeway - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def refresh(self, token: str, rooms: Iterable[str] = ()) -> float | None:
        identity = self._verifier.verify(token)
        if identity.user != self._user:
            raise InvalidToken("AnotherSubject")
        for room_id in (self._room, *rooms) if self._room is not None else tuple(rooms):
            if not identity.may_join(room_id):
                raise InvalidToken("AnotherRoom")
        self.identity = identity
        self.exp = identity.exp
        self._arm()
        return self.exp

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
