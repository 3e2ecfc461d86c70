"""``python -m stats_service``: run one stats instance configured from the environment."""

from realtime.serve import serve

from stats_service.app import create_app
from stats_service.settings import StatsSettings


def main() -> None:
    settings = StatsSettings()
    serve(lambda: create_app(settings), settings)


if __name__ == "__main__":
    main()
