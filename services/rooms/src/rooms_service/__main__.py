"""``python -m rooms_service``: run one rooms instance configured from the environment."""

from realtime.serve import serve

from rooms_service.app import create_app
from rooms_service.settings import RoomsSettings


def main() -> None:
    settings = RoomsSettings()
    serve(lambda: create_app(settings), settings)


if __name__ == "__main__":
    main()
