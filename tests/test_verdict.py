"""The verdict of a job as a pure function of its findings (fdffd.job.verdict.decide)."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from fdffd.audit.record import VERDICTS, ErrorInfo
from fdffd.errors import (
    DeviceIOError,
    DriveRemovedError,
    ExitCode,
    FdffdError,
    InterruptedJobError,
    JobCrashedError,
    RefusedError,
    TooSlowError,
)
from fdffd.job.verdict import CounterfeitPolicy, Findings, GaveUp, decide, exit_code_of

DEV = "/dev/sdx"
STAGES = st.sampled_from(["admit", "probe", "wipe-1", "image", "verify", "finish"])

FAILURES = st.one_of(
    st.builds(lambda s: DeviceIOError("EIO", device=DEV, stage=s, offset=0), STAGES),
    st.builds(lambda s: DriveRemovedError(device=DEV, stage=s), STAGES),
    st.builds(lambda s: TooSlowError(device=DEV, stage=s, speed="1 B/s", minimum="2 B/s"), STAGES),
    st.builds(lambda r: RefusedError("no", device=DEV, rule=r, stage="admit"), st.text(max_size=8)),
    st.builds(lambda s: InterruptedJobError("stopping", device=DEV, stage=s), STAGES),
    st.just(JobCrashedError("ValueError: bug")),
)
RANGES = st.lists(st.tuples(st.integers(0, 1 << 40), st.integers(1, 1 << 20)), max_size=4)
NAMES = st.lists(st.text(min_size=1, max_size=12), max_size=3)
POLICIES: st.SearchStrategy[CounterfeitPolicy] = st.sampled_from(["reject", "rescue"])


@st.composite
def findings(draw: st.DrawFn) -> Findings:
    announced = draw(st.integers(0, 1 << 42))
    usable = draw(st.one_of(st.just(announced), st.integers(0, announced)))
    return Findings(
        device=DEV,
        announced_bytes=announced,
        usable_bytes=usable,
        kind=draw(st.sampled_from([None, "wraparound", "dropped-zeros", "io-error"])),
        surface_done=draw(st.booleans()),
        bad_ranges=draw(RANGES),
        gave_up=draw(st.none() | st.builds(GaveUp, STAGES, st.just(64 << 20))),
        read_only=draw(st.none() | STAGES),
        payload_too_large=draw(st.none() | st.tuples(st.integers(1), st.integers(0))),
        payload_changed=draw(NAMES),
        payload_damaged=draw(NAMES),
        failure=draw(st.none() | FAILURES),
    )


def _clean(f: Findings) -> Findings:
    """``f`` with nothing wrong found but its capacity."""
    return Findings(
        device=f.device,
        announced_bytes=f.announced_bytes,
        usable_bytes=f.usable_bytes,
        kind=f.kind,
        surface_done=True,
    )


def _key(verdict: str, err: FdffdError | None) -> tuple[object, ...]:
    if err is None:
        return (verdict,)
    return (verdict, type(err), err.code, err.message, err.stage, err.rule)


EXIT = {"ok": 0, "rescued": 0, "counterfeit": 3, "defective": 4, "refused": 6}


@given(findings(), POLICIES)
def test_decide_is_total_pure_and_consistent(f: Findings, policy: CounterfeitPolicy) -> None:
    """Any findings give one of the verdicts, the same twice, without changing the findings;
    an error exactly when the drive is not finished, whose record form is valid; and the
    exit code that goes with the verdict."""
    before = copy.copy(f.__dict__)
    verdict, err = decide(f, policy)
    assert _key(verdict, err) == _key(*decide(f, policy))
    assert f.__dict__ == before
    assert verdict in VERDICTS
    assert (err is None) == (verdict in ("ok", "rescued"))
    code = exit_code_of(err)
    assert isinstance(code, ExitCode)
    if verdict in EXIT:
        assert code == EXIT[verdict]
    else:
        assert code == ExitCode.FAILED
    if err is not None:
        info = ErrorInfo.of(err)
        assert info.code == err.code and info.rule == err.rule


@given(findings(), POLICIES)
def test_a_failure_that_ended_the_job_decides_it(f: Findings, policy: CounterfeitPolicy) -> None:
    """What ended the job early is its verdict and error, whatever else was found, and such
    a drive is never recorded as wiped."""
    if f.failure is None:
        return
    verdict, err = decide(f, policy)
    assert err is f.failure and verdict == f.failure.verdict
    assert not f.wiped


@given(findings(), POLICIES)
def test_defects_of_the_drive_come_before_capacity(f: Findings, policy: CounterfeitPolicy) -> None:
    """Without a failure: a drive that turned read-only, failed too much, damaged the payload
    or has bad flash is defective, counterfeit or not, under either policy."""
    f.failure = None
    f.payload_changed = []
    verdict, err = decide(f, policy)
    broken = f.read_only or f.gave_up or f.payload_damaged or f.bad_ranges
    assert (verdict == "defective") == bool(broken)
    if f.read_only:
        assert err is not None and f"turned read-only during {f.read_only}" in err.message
        assert err.stage == f.read_only


@given(findings(), POLICIES)
def test_capacity_and_policy(f: Findings, policy: CounterfeitPolicy) -> None:
    """With nothing wrong but the capacity: an honest drive is ok; a fake is counterfeit
    under reject (both sizes in the message) and rescued under rescue; a payload too large
    fails an honest or rescued drive, never a rejected fake."""
    c = _clean(f)
    c.payload_too_large = f.payload_too_large
    verdict, err = decide(c, policy)
    if c.counterfeit and policy == "reject":
        assert verdict == "counterfeit" and err is not None and err.code == "counterfeit"
        assert f"({c.usable_bytes} bytes)" in err.message
        assert f"({c.announced_bytes} bytes)" in err.message
    elif c.payload_too_large is not None:
        assert verdict == "failed" and err is not None and err.code == "payload-too-large"
    else:
        assert verdict == ("rescued" if c.counterfeit else "ok") and err is None
    assert c.wiped


@given(findings())
def test_the_policy_matters_only_for_a_fake(f: Findings) -> None:
    """For a drive whose capacity is what it announces, reject and rescue decide alike."""
    f.usable_bytes = f.announced_bytes
    (v1, e1), (v2, e2) = decide(f, "reject"), decide(f, "rescue")
    assert v1 == v2
    assert (e1 and (e1.code, e1.message)) == (e2 and (e2.code, e2.message))


@given(findings(), POLICIES)
def test_ok_means_nothing_was_found(f: Findings, policy: CounterfeitPolicy) -> None:
    """An ok verdict only when nothing at all was found."""
    verdict, _ = decide(f, policy)
    if verdict == "ok":
        assert f.failure is None and not f.counterfeit and not f.bad_ranges
        assert not (f.read_only or f.gave_up or f.payload_changed or f.payload_damaged)
        assert f.payload_too_large is None


def test_payload_changed_is_a_failed_job_naming_the_file() -> None:
    """A payload file that changed since its manifest fails the job (exit 5), and says so
    before bad flash or capacity."""
    f = Findings(device=DEV, announced_bytes=10, usable_bytes=4, surface_done=True)
    f.payload_changed = ["README.TXT", "b"]
    f.bad_ranges = [(0, 512)]
    verdict, err = decide(f, "reject")
    assert verdict == "failed" and err is not None and err.code == "payload-changed"
    assert "'README.TXT'" in err.message and "2 file(s)" in err.message


def test_codes_of_the_expected_outcomes() -> None:
    """Each expected outcome's code and stage, as records carry them."""
    base = Findings(device=DEV, announced_bytes=100, usable_bytes=100, surface_done=True)
    cases: list[tuple[dict[str, object], str, str, str | None]] = [
        ({"bad_ranges": [(0, 512)]}, "defective", "defective", "verify"),
        ({"gave_up": GaveUp("image", 1)}, "defective", "defective", "image"),
        ({"payload_damaged": ["x"]}, "defective", "defective", "verify"),
        ({"payload_too_large": (10, 5)}, "failed", "payload-too-large", "image"),
        ({"usable_bytes": 50, "kind": "wraparound"}, "counterfeit", "counterfeit", "verify"),
    ]
    for change, verdict, code, stage in cases:
        f = copy.copy(base)
        for k, v in change.items():
            setattr(f, k, v)
        got, err = decide(f, "reject")
        assert got == verdict and isinstance(err, FdffdError), change
        assert (err.code, err.stage) == (code, stage), change
