"""Rooms service: only the shared skeleton so far (health, readiness, bus)."""

from fastapi import FastAPI
from realtime.app import create_service_app

from rooms_service.settings import RoomsSettings


def create_app(settings: RoomsSettings | None = None) -> FastAPI:
    settings = settings or RoomsSettings()
    return create_service_app(settings)
