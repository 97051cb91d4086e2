"""The pure profile choice: the first of an audience's profiles that fits the proven capacity."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fdffd.payload.choose import choose, nominal_size

SIZES = st.integers(min_value=0, max_value=2 * 10**12)
CANDIDATES = st.lists(
    st.tuples(st.text("abcdefgh-", min_size=1, max_size=8), SIZES),
    max_size=6,
    unique_by=lambda c: c[0],
)


@given(CANDIDATES, SIZES)
def test_the_first_that_fits_is_taken_and_those_before_say_why(
    candidates: list[tuple[str, int]], capacity: int
) -> None:
    """The choice is the first candidate whose need fits; every one before it is marked as
    not fitting with a reason naming a nominal size and no byte count; none after it is
    looked at; with none fitting, every one is listed and nothing is taken."""
    choice = choose(candidates, capacity)
    fitting = [name for name, needed in candidates if needed <= capacity]
    assert choice.profile == (fitting[0] if fitting else None)
    names = [t.profile for t in choice.tried]
    assert names == [n for n, _ in candidates][: len(names)]
    for t, (_, needed) in zip(choice.tried, candidates, strict=False):
        assert t.fits == (needed <= capacity)
        if not t.fits:
            assert t.reason and nominal_size(needed) in t.reason
            assert str(needed) not in t.reason or len(str(needed)) <= 2
    if choice.profile is None:
        assert len(choice.tried) == len(candidates)
    else:
        assert choice.tried[-1].fits and not any(t.fits for t in choice.tried[:-1])


@given(SIZES, SIZES)
def test_more_capacity_never_gets_a_later_profile(a: int, b: int) -> None:
    """Monotone: a larger proven capacity takes the same or an earlier (larger) profile."""
    candidates = [("p32", 28 * 10**9), ("p16", 14 * 10**9), ("p4", 3 * 10**9), ("p0", 0)]
    small, large = sorted((a, b))
    order = [n for n, _ in candidates]
    assert order.index(choose(candidates, large).profile or "") <= order.index(
        choose(candidates, small).profile or ""
    )


@given(st.integers(min_value=1, max_value=10**13))
def test_the_nominal_size_holds_what_is_needed(needed: int) -> None:
    """The nominal size is a power of two that holds ``needed``, and the next smaller does not."""
    text = nominal_size(needed)
    gb = int(text[:-1]) * (1024 if text.endswith("T") else 1)
    assert gb & (gb - 1) == 0
    assert gb * 10**9 * 0.9 >= needed
    assert gb == 1 or (gb // 2) * 10**9 * 0.9 < needed


def test_examples() -> None:
    assert nominal_size(20 * 10**9) == "32G"
    assert nominal_size(1) == "1G"
    assert nominal_size(1000 * 10**9) == "2T"
    c = choose([("youth-32g", 20 * 10**9), ("youth-4g", 3 * 10**9)], 7 * 10**9)
    assert c.profile == "youth-4g"
    assert c.tried[0].reason == "needs a 32G drive; this one proved smaller"
