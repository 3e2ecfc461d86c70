"""How often a repeated problem is logged: the first time and every ``every``-th time after, so a flood
of bad input is visible without one log line per frame."""


def worth_logging(count: int, every: int = 1000) -> bool:
    """True for the 1st, the ``every``-th, the 2 x ``every``-th... occurrence (``count`` starts at 1)."""
    return count == 1 or count % every == 0
