"""Load generator for bench/rooms_mux.py, run as its own process:
``python -m bench.rooms_mux_load ws://host:port --mode mux|sockets ...``.

``--members`` members, each in ``--rooms`` rooms (``mux-0`` ... ``mux-<rooms-1>``): ``mux`` gives each
member one ``/ws`` connection that joins every room; ``sockets`` gives each member one
``/ws/mux-<r>?format=json`` connection per room. One sender per room (its own ``/ws/mux-<r>`` socket)
sends 100-byte text frames carrying the marker ``@<id>:<send time ns>|``; every delivery of a marker to
a member gives one end-to-end latency (one clock). Raw protocols (bench/wsclient.py) keep its cost low.

Once every member has its welcomes it prints ``{"connected": ...}`` and waits for a line on stdin (the
benchmark measures the servers' memory then); then the phases of bench/rooms_load.py: ``paced``
(``--offered`` deliveries/s, open loop) and ``saturate`` (``--window`` messages in flight). One JSON
object on stdout at the end.
"""

import argparse
import asyncio
import json
import sys
import time

from bench.rooms_load import LOST_AFTER, PAYLOAD_SIZE, Tracker, drain, phase_result
from bench.wsclient import OP_CLOSE, OP_TEXT, RawClient, client_frame, open_clients, raise_fd_limit


class Member(RawClient):
    """One member connection: counts its welcomes, reads markers from messages."""

    def __init__(self, tracker: Tracker, request: bytes) -> None:
        super().__init__(request)
        self.tracker = tracker
        self.welcomes = 0
        self.welcomed = asyncio.Event()
        self.expected = 1

    def on_frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        if opcode == OP_TEXT:
            at = buf.find(b"@", start, end)
            if at >= 0:
                bar = buf.find(b"|", at, end)
                msg_id, sent_ns = buf[at + 1 : bar].split(b":")
                self.tracker.delivered(int(msg_id), (time.perf_counter_ns() - int(sent_ns)) / 1e9)
            elif buf.find(b'"type":"welcome"', start, end) >= 0:
                self.welcomes += 1
                if self.welcomes >= self.expected:
                    self.welcomed.set()
        elif opcode == OP_CLOSE:
            self.tracker.closed += 1


class Sender(Member):
    """A room's sender: its own copies of its messages are not deliveries to count."""

    def send(self, msg_id: int) -> None:
        marker = b"@%d:%d|" % (msg_id, time.perf_counter_ns())
        self.tracker.sent(msg_id)
        self.transport.write(client_frame(marker.ljust(PAYLOAD_SIZE, b"x")))  # type: ignore[union-attr]

    def on_frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        if opcode == OP_TEXT and buf.find(b'"type":"welcome"', start, end) >= 0:
            self.welcomed.set()


async def connect_members(args: argparse.Namespace, tracker: Tracker) -> list[Member]:
    if args.mode == "mux":
        members = await open_clients(f"{args.url}/ws", args.members, lambda r: Member(tracker, r))
        for member in members:
            member.expected = args.rooms
            for r in range(args.rooms):
                join = json.dumps({"type": "join", "room": f"mux-{r}", "ref": r}, separators=(",", ":"))
                member.transport.write(client_frame(join.encode()))  # type: ignore[union-attr]
    else:
        members = []
        for r in range(args.rooms):
            members += await open_clients(
                f"{args.url}/ws/mux-{r}?format=json", args.members, lambda req: Member(tracker, req)
            )
    await asyncio.wait_for(asyncio.gather(*(m.welcomed.wait() for m in members)), args.connect_deadline)
    return members


async def run(args: argparse.Namespace) -> dict[str, object]:
    tracker = Tracker(args.members)  # each message reaches every member once (whatever its sockets)
    started = time.perf_counter()
    members = await connect_members(args, tracker)
    senders: list[Sender] = []
    for r in range(args.rooms):
        senders += await open_clients(
            f"{args.url}/ws/mux-{r}?format=json", 1, lambda req: Sender(tracker, req)
        )
    await asyncio.wait_for(asyncio.gather(*(s.welcomed.wait() for s in senders)), 30)
    connect_s = time.perf_counter() - started
    print(json.dumps({"connected": len(members)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # memory measured

    loop = asyncio.get_running_loop()
    next_id = 0
    for _ in range(args.rooms):  # warm-up, not measured
        senders[next_id % len(senders)].send(next_id)
        next_id += 1
    await drain(tracker)
    tracker.latencies.clear()
    tracker.lost = 0

    rate = args.offered / args.members  # messages a second over all rooms
    count = max(1, int(rate * args.paced_seconds))
    before = tracker.deliveries
    start = loop.time()
    for k in range(count):
        await asyncio.sleep(max(0.0, start + k / rate - loop.time()))
        senders[next_id % len(senders)].send(next_id)
        next_id += 1
    await drain(tracker)
    paced = phase_result(tracker, tracker.deliveries - before, loop.time() - start, count)
    tracker.latencies.clear()
    tracker.lost = 0

    tracker.window = args.window
    before = tracker.deliveries
    sent = 0
    start = loop.time()
    end = start + args.seconds
    while loop.time() < end:
        if len(tracker.remaining) >= args.window:
            tracker.room_for_more.clear()
            try:
                await asyncio.wait_for(
                    tracker.room_for_more.wait(), max(0.01, min(LOST_AFTER, end - loop.time()))
                )
            except TimeoutError:
                tracker.expire()
            continue
        senders[next_id % len(senders)].send(next_id)
        next_id += 1
        sent += 1
        if sent % 8 == 0:
            await asyncio.sleep(0)
    elapsed = loop.time() - start
    deliveries = tracker.deliveries - before
    await drain(tracker)
    saturate = phase_result(tracker, deliveries, elapsed, sent)
    for client in [*members, *senders]:
        client.close()
    await asyncio.sleep(0.3)
    for client in [*members, *senders]:
        client.transport.close()  # type: ignore[union-attr]
    return {
        "mode": args.mode,
        "members": args.members,
        "rooms": args.rooms,
        "sockets": len(members),
        "connect_s": round(connect_s, 2),
        "closed_by_server": tracker.closed,
        "paced": paced,
        "saturate": saturate,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="ws://host:port (the gateway)")
    parser.add_argument("--mode", choices=["mux", "sockets"], required=True)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--offered", type=float, default=10_000.0)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--connect-deadline", type=float, default=120.0, help="seconds for every welcome")
    args = parser.parse_args()
    raise_fd_limit()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
