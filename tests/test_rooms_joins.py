"""A storm of joins into one big room through the gateway: every member admitted, the count exact.

2 000 JSON members open through the gateway into one room on two replicas, 200 joins in flight (the
load generator of ``bench joins``, in this process); none is refused, all within the deadline, and a
member who was there first is told the exact total (``members`` events: the room is far above
PRESENCE_EVENTS_MAX_MEMBERS). About 2 000 descriptors here and 4 000 in the gateway: far below the
20 000 open-file limit.
"""

import asyncio
import json

from bench.joins_load import run
from bench.wsclient import raise_fd_limit
from tests.conftest import make_stack, recv, ws

MEMBERS = 2000
IN_FLIGHT = 200
STORM_DEADLINE = 150.0  # seconds for all of them on a busy shared 2-core machine


async def test_a_storm_of_joins_into_one_room_is_admitted_in_full() -> None:
    raise_fd_limit()
    # every member comes from 127.0.0.1: lift the gateway's per-address cap (1 000)
    with make_stack("rooms=2", MAX_CONNECTIONS_PER_ADDRESS="10000", LOG_LEVEL="warning") as stack:
        async with await ws(f"{stack.gateway_url}/ws/storm?format=json") as first:
            assert json.loads(await recv(first))["type"] == "welcome"
            counts: list[int] = []
            kinds: list[str] = []

            async def told(count: int) -> None:
                async with asyncio.timeout(30):
                    while counts[-1:] != [count]:
                        event = json.loads(await first.recv())
                        assert event["type"] in ("join", "members"), event
                        counts.append(event["count"])
                        kinds.append(event["type"])

            async def all_counted() -> None:  # with every member still there
                await told(MEMBERS + 1)

            url = f"{stack.gateway_url}/ws/storm"
            result = await run(url, MEMBERS, IN_FLIGHT, MEMBERS, STORM_DEADLINE, hold=all_counted)
            assert result["refused"] == {} and result["joined"] == MEMBERS, result
            await told(1)  # and back to the first member alone once they have left
            # one event per member only while the room was small (at most 100), then one per interval
            assert kinds.count("join") <= 100 and kinds.count("members") < 300, (len(kinds), counts[-20:])
