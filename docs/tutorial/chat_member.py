"""A member of the chat backend's room (the tutorial's second file): logs in to the backend for a token,
joins the room through the gateway, says hello, prints every message.

    .venv/bin/python docs/tutorial/chat_member.py ada "Ada L."
"""

import argparse
import asyncio
import json
import urllib.request

from realtime_client import Room


def login(backend: str, user: str, name: str) -> dict[str, str]:
    request = urllib.request.Request(
        f"{backend}/login",
        data=json.dumps({"user": user, "name": name}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user")
    parser.add_argument("name")
    parser.add_argument("--backend", default="http://127.0.0.1:8080")
    parser.add_argument("--gateway", default="ws://127.0.0.1:8000")
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")
    args = parser.parse_args()
    room = login(args.backend, args.user, args.name)["room"]

    async def token() -> str:  # asked before every connect, so a reconnect hours later gets a fresh one
        return (await asyncio.to_thread(login, args.backend, args.user, args.name))["token"]

    async with Room(args.gateway, room, token=token) as chat:
        print(f"joined {room} as {chat.welcome.name} ({chat.welcome.user})", flush=True)
        await chat.send(f"hello from {args.name}")
        seen = 0
        async for message in chat:
            print(f"[{message.seq}] {message.name or message.sender}: {message.text}", flush=True)
            seen += 1
            if seen == args.count:
                break


if __name__ == "__main__":
    asyncio.run(main())
