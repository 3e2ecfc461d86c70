"""``python -m rooms_service.hash_password``: print a salted hash to use as a room's password value.

Reads the password from standard input (a prompt on a terminal), so it stays out of shell history:

    python -m rooms_service.hash_password            # prompts twice
    printf %s 'secret123' | python -m rooms_service.hash_password
"""

import argparse
import getpass
import sys

from rooms_service.guard import DEFAULT_ITERATIONS, hash_password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rooms_service.hash_password", description=__doc__)
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("room password: ")
        if getpass.getpass("again: ") != password:
            print("the two entries differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.read().rstrip("\r\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    sys.stdout.write(hash_password(password, iterations=args.iterations) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
