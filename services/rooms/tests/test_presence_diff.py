"""The presence diff: joins and leaves since the last one, cancelling out, capped."""

from rooms_service.presence_diff import Diff, entry


def test_a_member_who_joins_and_leaves_inside_one_interval_is_not_listed() -> None:
    diff = Diff(cap=10)
    diff.join(entry("a", "u-a", "Ann"))
    diff.join(entry("b"))
    diff.leave(entry("a"))
    diff.leave(entry("c"))
    assert diff.changed
    assert diff.lists() == ([{"member": "b"}], [{"member": "c"}])
    diff.clear()
    assert not diff.changed and diff.lists() == ([], [])


def test_more_than_the_cap_lists_nobody_until_cleared() -> None:
    diff = Diff(cap=2)
    for member in "abc":
        diff.join(entry(member))
    assert diff.lists() is None and diff.changed
    diff.join(entry("d"))
    assert diff.lists() is None
    diff.clear()
    diff.merge([{"member": "x", "name": "X"}], [{"member": "y"}, {"bogus": 1}])
    assert diff.lists() == ([{"member": "x", "name": "X"}], [{"member": "y"}])
    diff.merge(None, None)  # another replica's diff that was not listed
    assert diff.lists() is None
