"""``python -m echo_service``: run one echo instance configured from the environment."""

from realtime.serve import serve

from echo_service.app import create_app
from echo_service.settings import EchoSettings


def main() -> None:
    settings = EchoSettings()
    serve(lambda: create_app(settings), settings)


if __name__ == "__main__":
    main()
