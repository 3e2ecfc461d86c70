"""Admission rules without a server: counts, origins, RFC 6455 checks (the system tests drive them live)."""

import h11
import pytest
from gateway.admission import Admission, Origins, default_max_connections, upgrade_refusal

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(*headers: tuple[bytes, bytes], method: bytes = b"GET", drop: bytes = b"") -> h11.Request:
    base = [
        (b"host", b"gw.example:8000"),
        (b"upgrade", b"websocket"),
        (b"connection", b"keep-alive, Upgrade"),
        (b"sec-websocket-key", KEY),
        (b"sec-websocket-version", b"13"),
    ]
    fields = [(k, v) for k, v in base if k != drop] + list(headers)
    return h11.Request(method=method, target=b"/echo", headers=fields)


def test_counts_per_address_and_per_process_and_release() -> None:
    admission = Admission(max_connections=3, max_per_address=2, health_reserve=1)
    a1, r1 = admission.admit("10.0.0.1")
    a2, r2 = admission.admit("10.0.0.1")
    a3, r3 = admission.admit("10.0.0.1")
    assert (r1, r2) == (None, None) and r3 is not None and r3.status == 429
    for ticket in (a1, a2, a3):
        ticket.head_done()  # sessions now: nobody to evict
    b1, rb = admission.admit("10.0.0.2")
    assert rb is None and b1.in_reserve  # the 4th: over max_connections, inside the health reserve
    a3.release()
    a3.release()  # idempotent
    b1.release()
    assert admission.total == 2 and admission.by_address == {"10.0.0.1": 2}
    for ticket in (a1, a2):
        ticket.release()
    assert admission.total == 0 and admission.by_address == {}


def test_reserve_then_refusal_before_the_head() -> None:
    admission = Admission(max_connections=1, max_per_address=100, health_reserve=1)
    first, _ = admission.admit("10.0.0.1")
    first.head_done()  # a session: never evicted
    reserve, refusal = admission.admit("10.0.0.2")
    assert refusal is None and reserve.in_reserve and not first.in_reserve
    evicted: list[bool] = []
    reserve.evict = lambda: evicted.append(True)
    third, refusal = admission.admit("10.0.0.3")  # the slow sender in the reserve makes room
    assert refusal is None and third.in_reserve and evicted == [True] and reserve.released
    third.head_done()  # a health check being answered
    _, refusal = admission.admit("10.0.0.4")  # nobody to evict, the reserve full: 503 before the head
    assert refusal is not None and refusal.status == 503


def test_default_cap_leaves_room_for_two_descriptors_per_session() -> None:
    assert default_max_connections(20_000, 32) == (20_000 - 256 - 32) // 2
    assert default_max_connections(100, 32) == 1


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (upgrade(), None),
        (upgrade(method=b"POST"), 400),
        (upgrade(drop=b"sec-websocket-key"), 400),
        (upgrade((b"sec-websocket-key", b"c2hvcnQ="), drop=b"sec-websocket-key"), 400),
        (upgrade(drop=b"connection"), 400),
        (upgrade(drop=b"upgrade"), 400),
        (upgrade((b"sec-websocket-version", b"8"), drop=b"sec-websocket-version"), 426),
        (upgrade(drop=b"sec-websocket-version"), 426),
    ],
)
def test_upgrade_checks_follow_rfc6455(event: h11.Request, status: int | None) -> None:
    refusal = upgrade_refusal(event)
    assert (refusal.status if refusal else None) == status
    if status == 426:
        assert (b"sec-websocket-version", b"13") in refusal.headers  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("allowed", "origin", "host", "ok"),
    [
        ([], None, b"gw.example", True),
        ([], b"https://gw.example", b"gw.example", True),
        ([], b"https://gw.example", b"gw.example:443", True),
        ([], b"http://gw.example:8000", b"gw.example:8000", True),
        ([], b"http://GW.example:8000", b"gw.example:8000", True),
        ([], b"http://gw.example:8001", b"gw.example:8000", False),
        ([], b"http://gw.example", b"gw.example:8000", False),
        ([], b"http://evil.example", b"gw.example", False),
        ([], b"null", b"gw.example", False),
        (["https://app.example"], b"https://app.example", b"gw.example", True),
        (["https://app.example"], b"http://app.example", b"gw.example", False),
        (["*"], b"http://evil.example", b"gw.example", True),
    ],
)
def test_origins(allowed: list[str], origin: bytes | None, host: bytes, ok: bool) -> None:
    headers = [(b"host", host)] + ([(b"origin", origin)] if origin is not None else [])
    event = h11.Request(method=b"GET", target=b"/echo", headers=headers)
    assert (Origins(allowed).refusal(event) is None) == ok


def test_at_the_cap_a_newcomer_evicts_the_oldest_slow_sender() -> None:
    admission = Admission(max_connections=3, max_per_address=100, health_reserve=1)
    evicted: list[str] = []
    done, _ = admission.admit("10.0.0.1")
    done.head_done()  # a complete head is never evicted
    tickets = [admission.admit(f"10.0.0.{i}")[0] for i in (2, 3)]
    for name, ticket in zip(("oldest", "younger"), tickets, strict=True):
        ticket.evict = lambda name=name: evicted.append(name)
    newcomer, refusal = admission.admit("10.0.0.4")
    assert refusal is None and not newcomer.in_reserve and evicted == ["oldest"] and tickets[0].released
    assert admission.total == 3
