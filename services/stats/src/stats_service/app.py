"""Stats service: only the shared skeleton so far (health, readiness, bus)."""

from fastapi import FastAPI
from realtime.app import create_service_app

from stats_service.settings import StatsSettings


def create_app(settings: StatsSettings | None = None) -> FastAPI:
    settings = settings or StatsSettings()
    return create_service_app(settings)
