"""``make bench`` / ``python -m bench [suite ...]``: run benchmark suites and print their tables.

Each suite is a module ``bench.<name>`` with ``main() -> None`` that starts what it measures on free
loopback ports, drives it from a separate load-generator process, prints a markdown table, and stops
everything it started. Every run is bounded in time and in connection count.
"""

import importlib
import sys

SUITES = ["echo", "stats", "rooms", "faults", "hostile", "api", "joins", "big_rooms", "events", "hooks"]


def main(argv: list[str]) -> int:
    chosen = argv or SUITES
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        print(f"unknown suite(s) {unknown}; choose from {SUITES}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"\n## bench: {name}\n", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
