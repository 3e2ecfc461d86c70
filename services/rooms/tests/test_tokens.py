"""Identity tokens: what the verifier accepts and refuses, and what a token member is in a room."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from realtime.close_codes import FINAL, CloseCode
from rooms_service.make_token import main as make_token
from rooms_service.tokens import Identity, InvalidToken, TokenVerifier
from roomsclient import client, close_of, recv, recv_json, served

SECRET = "s" * 32
PASSWORDS = {"VIP": "secret123"}


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "u-1", "name": "Alice", "rooms": ["lobby", "VIP"], "exp": int(time.time()) + 60} | extra


def hs256(**extra: object) -> str:
    return jwt.encode(claims(**extra), SECRET, algorithm="HS256")


def pem_pair(kind: str) -> tuple[object, str]:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa":
        private = rsa.generate_private_key(65537, 2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode("ascii")


# --- the verifier ---------------------------------------------------------------------------------
def test_hs256_token_gives_user_name_and_rooms() -> None:
    identity = TokenVerifier(SECRET).verify(hs256())
    assert identity == Identity("u-1", "Alice", frozenset({"lobby", "VIP"}))
    assert identity.may_join("VIP") and not identity.may_join("other")


@pytest.mark.parametrize(("kind", "algorithm"), [("rsa", "RS256"), ("ec", "ES256")])
def test_public_key_tokens_use_the_algorithm_of_the_key(kind: str, algorithm: str) -> None:
    private, public = pem_pair(kind)
    verifier = TokenVerifier(public_key=public)
    assert verifier.algorithms == [algorithm]
    assert verifier.verify(jwt.encode(claims(rooms="*"), private, algorithm=algorithm)).rooms is None


def test_the_public_key_is_never_accepted_as_an_hmac_secret() -> None:
    """Algorithm confusion: an HS256 token whose HMAC key is the (public) RSA key must not pass."""
    _, public = pem_pair("rsa")

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims()).encode())
    signature = hmac.new(public.encode(), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + b64(signature)).decode()
    with pytest.raises(InvalidToken):
        TokenVerifier(public_key=public).verify(forged)


@pytest.mark.parametrize(
    "token",
    [
        hs256(exp=int(time.time()) - 1),  # expired
        jwt.encode(claims(), "t" * 32, algorithm="HS256"),  # another secret: forged
        hs256()[:-2] + "xx",  # signature changed
        "not.a.jwt",
        "",
        jwt.encode(claims(), None, algorithm="none"),  # unsigned
        jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"),
        jwt.encode({k: v for k, v in claims().items() if k != "sub"}, SECRET, algorithm="HS256"),
        hs256(sub=""),
        hs256(sub=7),
        hs256(rooms="lobby"),  # a string that is not "*"
        hs256(rooms=[1]),
        hs256(name=""),
        hs256(name="x" * 65),
    ],
)
def test_refused_tokens(token: str) -> None:
    with pytest.raises(InvalidToken) as refused:
        TokenVerifier(SECRET).verify(token)
    assert token not in str(refused.value) or not token


def test_without_keys_every_token_is_refused() -> None:
    with pytest.raises(InvalidToken):
        TokenVerifier().verify(hs256())


def test_audience_and_issuer_when_configured() -> None:
    verifier = TokenVerifier(SECRET, audience="chat", issuer="https://login.example")
    assert verifier.verify(hs256(aud="chat", iss="https://login.example")).user == "u-1"
    for token in (hs256(aud="other", iss="https://login.example"), hs256(aud="chat"), hs256()):
        with pytest.raises(InvalidToken):
            verifier.verify(token)


def test_a_short_secret_or_a_bad_key_fails_at_start() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenVerifier("short")
    with pytest.raises(ValueError):
        TokenVerifier(public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


def test_make_token_mints_what_the_service_accepts(monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TOKEN_SECRET", SECRET)
    assert make_token(["--user", "bob", "--name", "Bob", "--rooms", "lobby,ops", "--ttl", "60"]) == 0
    identity = TokenVerifier(SECRET).verify(capsys.readouterr().out.strip())
    assert identity == Identity("bob", "Bob", frozenset({"lobby", "ops"}))
    private, public = pem_pair("ec")
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        private.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert make_token(["--private-key", str(key_file), "--user", "eve"]) == 0
    assert TokenVerifier(public_key=public).verify(capsys.readouterr().out.strip()).rooms is None
    monkeypatch.setenv("TOKEN_SECRET", "short")
    assert make_token(["--user", "x"]) == 1


# --- token members in rooms (the app under the real uvicorn protocol) -----------------------------
def test_invalid_token_is_a_final_code() -> None:
    assert CloseCode.INVALID_TOKEN == 4001 and CloseCode.INVALID_TOKEN in FINAL


async def test_token_member_enters_a_guarded_room_and_is_named_in_every_json_event() -> None:
    async with (
        served(token_secret=SECRET, room_passwords=PASSWORDS) as (_, url),
        client(f"{url}/ws/VIP?format=json&pass=secret123") as other,
    ):
        assert (await recv_json(other))["type"] == "welcome"
        async with client(f"{url}/ws/VIP?format=json&token={hs256()}") as member:
            welcome = await recv_json(member)
            assert (welcome["type"], welcome["user"], welcome["name"]) == ("welcome", "u-1", "Alice")
            join = await recv_json(other)
            assert (join["type"], join["user"], join["name"]) == ("join", "u-1", "Alice")
            await member.send(json.dumps({"text": "hi", "id": "m1"}))
            seen = await recv_json(other)
            assert (seen["text"], seen["user"], seen["name"], seen["sender"]) == (
                "hi",
                "u-1",
                "Alice",
                welcome["you"],
            )
        leave = await recv_json(other)
        assert (leave["type"], leave["user"]) == ("leave", "u-1")


async def test_plain_text_members_see_only_the_text_of_a_token_member() -> None:
    async with (
        served(token_secret=SECRET) as (_, url),
        client(f"{url}/ws/lobby") as plain,
        client(f"{url}/ws/lobby?token={hs256()}") as member,
    ):
        await member.send("hello")
        assert await recv(plain) == "hello"


@pytest.mark.parametrize(
    "token",
    [hs256(exp=int(time.time()) - 5), jwt.encode(claims(), "t" * 32, algorithm="HS256"), "garbage", ""],
)
async def test_expired_forged_or_malformed_token_closes_4001(token: str) -> None:
    async with served(token_secret=SECRET) as (app, url), client(f"{url}/ws/lobby?token={token}") as ws:
        assert await close_of(ws) == (CloseCode.INVALID_TOKEN, "invalid token")
        assert app.state.rooms.stats()["members"] == 0


async def test_a_token_for_other_rooms_closes_4001_even_with_the_right_password() -> None:
    async with (
        served(token_secret=SECRET, room_passwords={"ops": "pw"}) as (_, url),
        client(f"{url}/ws/ops?pass=pw&token={hs256()}") as ws,
    ):
        assert await close_of(ws) == (CloseCode.INVALID_TOKEN, "invalid token")


async def test_tokens_are_refused_when_none_is_configured() -> None:
    async with served() as (_, url), client(f"{url}/ws/lobby?token={hs256()}") as ws:
        assert await close_of(ws) == (CloseCode.INVALID_TOKEN, "invalid token")


async def test_refused_tokens_count_on_the_password_throttle() -> None:
    bad = jwt.encode(claims(), "t" * 32, algorithm="HS256")
    async with served(token_secret=SECRET, auth_max_failures=3) as (_, url):
        for _ in range(3):
            async with client(f"{url}/ws/lobby?token={bad}") as ws:
                assert (await close_of(ws))[0] == CloseCode.INVALID_TOKEN
        async with client(f"{url}/ws/lobby?token={hs256()}") as ws:  # a valid one now waits it out
            assert await close_of(ws) == (CloseCode.FORBIDDEN, "forbidden")
        async with client(f"{url}/ws/VIP?token={hs256()}") as ws:  # another room: not throttled
            await ws.send("in")
            assert await recv(ws) == "in"


async def test_display_name_without_a_token() -> None:
    async with (
        served() as (_, url),
        client(f"{url}/ws/lobby?format=json&name=%20Zo%C3%AB%20") as zoe,
    ):
        welcome = await recv_json(zoe)
        assert welcome["name"] == "Zoë" and "user" not in welcome
        await zoe.send("hi")
        message = await recv_json(zoe)
        assert message["name"] == "Zoë" and "user" not in message


async def test_a_token_members_name_is_the_tokens() -> None:
    async with (
        served(token_secret=SECRET) as (_, url),
        client(f"{url}/ws/lobby?format=json&name=Mallory&token={hs256()}") as ws,
    ):
        assert (await recv_json(ws))["name"] == "Alice"


@pytest.mark.parametrize(
    ("query", "settings", "reason"),
    [
        ("name=", {}, "invalid name"),
        ("name=" + "x" * 65, {}, "invalid name"),
        ("name=a%0Ab", {}, "invalid name"),
        ("name=Zoe", {"room_display_names": False}, "display names need a token"),
    ],
)
async def test_bad_or_unwanted_display_names_close_1008(query: str, settings: dict, reason: str) -> None:
    async with served(**settings) as (_, url), client(f"{url}/ws/lobby?{query}") as ws:
        assert await close_of(ws) == (CloseCode.POLICY_VIOLATION, reason)
