"""A chat backend: your app's own FastAPI service next to the platform (the tutorial's first file).

It does two things the platform leaves to the app: it says who a user is (an identity token the rooms
service checks), and it speaks in the rooms itself (the publish API, through the gateway). Run it with
uvicorn, as docs/tutorial/chat-backend.md shows.
"""

import os
import time

import httpx
import jwt
from fastapi import FastAPI
from pydantic import BaseModel, Field

GATEWAY = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000")  # the platform's one public address
TOKEN_SECRET = os.environ["TOKEN_SECRET"]  # the same secret the rooms service checks tokens with
PUBLISH_API_KEY = os.environ["PUBLISH_API_KEY"]  # one of the rooms service's PUBLISH_API_KEYS
ROOM = "support"

app = FastAPI(title="chat backend")


class Login(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)


class Announcement(BaseModel):
    text: str = Field(min_length=1)


@app.post("/login")
async def login(who: Login) -> dict[str, str]:
    """Your real login goes here (a password, SSO...). Then: a token for this user, for our room only,
    valid for five minutes: long enough to connect, and the client asks again before every reconnect."""
    claims = {"sub": who.user, "name": who.name, "rooms": [ROOM], "exp": int(time.time()) + 300}
    return {"token": jwt.encode(claims, TOKEN_SECRET, algorithm="HS256"), "room": ROOM}


@app.post("/announce")
async def announce(announcement: Announcement) -> dict[str, int]:
    """The backend speaks in the room: stored and delivered like a member's message, sender "api"."""
    async with httpx.AsyncClient(base_url=GATEWAY, timeout=15) as client:
        answer = await client.post(
            f"/api/rooms/{ROOM}/messages",
            headers={"Authorization": f"Bearer {PUBLISH_API_KEY}"},
            json={"text": announcement.text, "name": "support bot"},
        )
    answer.raise_for_status()
    return {"seq": answer.json()["seq"]}
