"""The app's backend for ``bench hooks``: answers every hook ``allow`` at once (verifying nothing: the
figures are the rooms side's cost). Run as its own process: ``uvicorn bench.hook_backend:app``."""

from fastapi import FastAPI
from fastapi.responses import Response

app = FastAPI()
ALLOW = b'{"result":"allow"}'


@app.post("/hooks/{hook}")
async def answer(hook: str) -> Response:
    return Response(ALLOW, media_type="application/json")
