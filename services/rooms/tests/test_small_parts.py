import json
from pathlib import Path

import pytest
from rooms_service.limits import TokenBucket
from rooms_service.presence import Presence
from rooms_service.room_ids import InvalidRoomId, room_subject, validate_room_id
from rooms_service.settings import RoomsSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("room_id", ["lobby", "VIP", "a", "room_1-b", "x" * 64])
def test_valid_room_ids(room_id: str) -> None:
    assert validate_room_id(room_id, 64) == room_id
    assert room_subject("rooms", room_id) == f"rooms.{room_id}"


@pytest.mark.parametrize(
    "room_id", ["", "a.b", "*", ">", "a b", "a\tb", "rooms.>", "x" * 65, "ünï", "a/b", "a%2E"]
)
def test_invalid_room_ids_never_become_subjects(room_id: str) -> None:
    with pytest.raises(InvalidRoomId):
        validate_room_id(room_id, 64)
    if room_id:
        with pytest.raises(InvalidRoomId):
            room_subject("rooms", room_id.replace("x" * 65, "a.b"))


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # one token back
    assert bucket.take()
    assert not bucket.take()


def test_presence_counts_replicas_and_forgets_silent_ones() -> None:
    clock = FakeClock()
    presence = Presence(30.0, clock=clock)
    presence.heard("r2", 3)
    clock.now += 20
    presence.heard("r3", 1)
    assert presence.total(2) == 6
    presence.heard("r3", 0)  # r3's last member left
    assert presence.total(2) == 5
    clock.now += 15
    assert presence.prune()
    assert presence.total(2) == 2


def test_passwords_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "passwords.json"
    secret_file.write_text(json.dumps({"VIP": "from-file", "staff": "s"}))
    monkeypatch.setenv("ROOM_PASSWORDS", '{"VIP": "from-env", "club": "c"}')
    monkeypatch.setenv("ROOM_PASSWORDS_FILE", str(secret_file))
    assert RoomsSettings().passwords() == {"VIP": "from-file", "club": "c", "staff": "s"}


def test_password_file_of_the_wrong_shape_fails_at_start(tmp_path: Path) -> None:
    secret_file = tmp_path / "passwords.json"
    secret_file.write_text('["VIP"]')
    with pytest.raises(ValueError):
        RoomsSettings(room_passwords_file=secret_file).passwords()


def test_subject_prefix_cannot_hold_wildcards() -> None:
    with pytest.raises(ValueError):
        RoomsSettings(subject_prefix="rooms.>")


def test_a_guarded_room_with_an_invalid_id_fails_at_start() -> None:
    from rooms_service.app import create_app

    with pytest.raises(ValueError):
        create_app(RoomsSettings(bus_url="memory://", room_passwords={"V.I.P": "x"}))
