"""A presence diff: the members that joined and left a room since the last one, capped.

Above ``PRESENCE_EVENTS_MAX_MEMBERS`` a room's joins and leaves are not announced one by one: each
replica gathers them in a ``Diff`` and sends one per ``PRESENCE_DIFF_INTERVAL`` (Phoenix Presence's
diffs). A member that joins and leaves inside one interval cancels out. Beyond ``cap`` entries in
either list the diff stops listing and says only that the room changed (``listed`` False): its event
then carries the count alone, as Centrifugo does for channels too big to list.
"""

from typing import Any

# A member as a diff lists it: {"member": id, "user": ..., "name": ...} (user and name when known).
Entry = dict[str, Any]


def entry(member: str, user: Any = None, name: Any = None) -> Entry:
    shown: Entry = {"member": member}
    if isinstance(user, str):
        shown["user"] = user
    if isinstance(name, str):
        shown["name"] = name
    return shown


class Diff:
    __slots__ = ("_cap", "changed", "joined", "left", "listed")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self.joined: dict[str, Entry] = {}
        self.left: dict[str, Entry] = {}
        self.listed = True  # False once more than ``cap`` joined or left: the count only
        self.changed = False  # anything to send (a count that moved counts too)

    def join(self, shown: Entry) -> None:
        self.changed = True
        if not self.listed:
            return
        member = shown["member"]
        if self.left.pop(member, None) is None:
            self.joined[member] = shown
        self._check()

    def leave(self, shown: Entry) -> None:
        self.changed = True
        if not self.listed:
            return
        member = shown["member"]
        if self.joined.pop(member, None) is None:  # joined and left inside one interval: nothing to say
            self.left[member] = shown
        self._check()

    def merge(self, joined: Any, left: Any) -> None:
        """Another replica's diff (``joined``/``left`` lists of entries, or None when it was not listed)."""
        self.changed = True
        if not isinstance(joined, list) or not isinstance(left, list):
            self.unlist()
            return
        for shown in joined:
            if isinstance(shown, dict) and isinstance(shown.get("member"), str):
                self.join(entry(shown["member"], shown.get("user"), shown.get("name")))
        for shown in left:
            if isinstance(shown, dict) and isinstance(shown.get("member"), str):
                self.leave(entry(shown["member"], shown.get("user"), shown.get("name")))

    def unlist(self) -> None:
        self.changed = True
        self.listed = False
        self.joined.clear()
        self.left.clear()

    def _check(self) -> None:
        if len(self.joined) > self._cap or len(self.left) > self._cap:
            self.unlist()

    def lists(self) -> tuple[list[Entry], list[Entry]] | None:
        """The joined and left lists, or None when there were too many to list."""
        self._check()
        if not self.listed:
            return None
        return list(self.joined.values()), list(self.left.values())

    def clear(self) -> None:
        self.joined.clear()
        self.left.clear()
        self.listed = True
        self.changed = False
