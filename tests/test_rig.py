"""The test rig itself: loop devices, FUSE fake drives and donor markers behave as promised.

Every device check goes through the loop device with O_DIRECT and page-aligned buffers, the way
fdffd itself does I/O.
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdffd.sim.fakedrive import CACHE_PAGE, FakeDrive, FakeMedia, FakeSpec, fake_drive
from fdffd.sim.loopdev import LoopDevice, backing_file_of, loop_device, loops_backed_by
from fdffd.sim.markers import BLOCK, find_markers, write_markers

MiB = 1 << 20
LoopFactory = Callable[..., LoopDevice]
FakeFactory = Callable[..., FakeDrive]


# --------------------------------------------------------------------------- helpers


def pattern(offset: int, n: int) -> bytes:
    """Bytes that say where they were written."""
    unit = b"@%015x" % offset
    return (unit * (n // len(unit) + 1))[:n]


def dwrite(path: str, offset: int, data: bytes) -> None:
    buf = mmap.mmap(-1, len(data))
    buf.write(data)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        assert os.pwrite(fd, buf, offset) == len(data)
    finally:
        os.close(fd)
        buf.close()


def dread(path: str, offset: int, n: int) -> bytes:
    buf = mmap.mmap(-1, n)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        got = os.preadv(fd, [buf], offset)
        return bytes(buf[:got])
    finally:
        os.close(fd)
        buf.close()


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(OSError) as info:
        fn()
    assert info.value.errno is not None
    return info.value.errno


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


# --------------------------------------------------------------------------- loop devices


def test_loop_device_attaches_a_sparse_tmpfs_file_and_removes_it(loop_support: None) -> None:
    """A loop device is backed by our file while in use; afterwards both are gone."""
    with loop_device(64 * MiB) as dev:
        assert dev.path.startswith("/dev/loop")
        assert backing_file_of(dev.path) == str(dev.backing)
        assert dev.size == 64 * MiB
        assert str(dev.backing).startswith("/dev/shm/")
        dwrite(dev.path, 5 * MiB, pattern(5 * MiB, 4096))
        assert dread(dev.path, 5 * MiB, 4096) == pattern(5 * MiB, 4096)
    assert loops_backed_by(dev.backing) == []
    assert not dev.backing.exists()


def test_loop_device_over_a_given_file_keeps_the_file(loop_support: None, tmp_path: Path) -> None:
    """A caller's backing file is used as is and left in place."""
    img = Path("/dev/shm") / f"fdffd-test-{os.getpid()}.img"
    try:
        img.write_bytes(pattern(0, 2 * MiB))
        with loop_device(backing=img) as dev:
            assert dread(dev.path, MiB, 512) == pattern(0, 2 * MiB)[MiB : MiB + 512]
        assert img.exists()
        assert loops_backed_by(img) == []
    finally:
        img.unlink(missing_ok=True)


def test_read_only_loop_refuses_writes(loop: LoopFactory) -> None:
    """A read-only loop device refuses writes and still reads."""
    dev = loop(16 * MiB, read_only=True)
    assert (dev.sysfs / "ro").read_text().strip() == "1"
    assert errno_of(lambda: dwrite(dev.path, 0, pattern(0, 4096))) in (
        errno.EROFS,
        errno.EPERM,
        errno.EACCES,
        errno.EIO,
    )
    assert dread(dev.path, 0, 4096) == bytes(4096)


def test_loop_sector_size_is_applied(loop: LoopFactory) -> None:
    """--sector-size reaches the kernel as the logical block size."""
    dev = loop(16 * MiB, sector_size=4096)
    assert (dev.sysfs / "queue" / "logical_block_size").read_text().strip() == "4096"


# --------------------------------------------------------------------------- fake drives


def test_honest_drive_round_trips_everywhere(fake: FakeFactory) -> None:
    """An honest drive returns what was written at its start, middle and end."""
    drive = fake(FakeSpec.honest(64 * MiB))
    assert not drive.loop.direct_io()  # type: ignore[union-attr]
    assert drive.announced_bytes == drive.real_bytes == 64 * MiB
    for off in (0, 31 * MiB + 512, 64 * MiB - MiB):
        dwrite(drive.path, off, pattern(off, MiB))
    for off in (0, 31 * MiB + 512, 64 * MiB - MiB):
        assert dread(drive.path, off, MiB) == pattern(off, MiB)


def test_wraparound_aliases_past_real_onto_the_start(fake: FakeFactory) -> None:
    """On a wraparound fake, reading real+x returns what was written at x, and vice versa."""
    drive = fake(FakeSpec(announced=256 * MiB, real=64 * MiB, kind="wraparound"))
    x = 3 * MiB + 4096
    dwrite(drive.path, x, pattern(x, 8192))
    assert dread(drive.path, 64 * MiB + x, 8192) == pattern(x, 8192)
    assert dread(drive.path, 192 * MiB + x, 8192) == pattern(x, 8192)
    dwrite(drive.path, 128 * MiB + 7 * MiB, pattern(1, 4096))
    assert dread(drive.path, 7 * MiB, 4096) == pattern(1, 4096)


def test_wraparound_request_across_the_boundary_is_split(fake: FakeFactory) -> None:
    """One request straddling the real size maps its two halves to the end and the start."""
    drive = fake(FakeSpec(announced=128 * MiB, real=64 * MiB, kind="wraparound"))
    data = pattern(99, MiB)
    dwrite(drive.path, 64 * MiB - MiB // 2, data)
    assert dread(drive.path, 0, MiB // 2) == data[MiB // 2 :]
    assert dread(drive.path, 64 * MiB - MiB // 2, MiB // 2) == data[: MiB // 2]


@pytest.mark.parametrize(("kind", "fill"), [("drop-zeros", 0x00), ("drop-ff", 0xFF)])
def test_dropping_fakes_lose_writes_past_real(fake: FakeFactory, kind: str, fill: int) -> None:
    """Writes past the real size vanish and read back as zeros or 0xFF; below it they stick."""
    drive = fake(FakeSpec(announced=128 * MiB, real=32 * MiB, kind=kind))
    dwrite(drive.path, 40 * MiB, pattern(40, MiB))
    assert dread(drive.path, 40 * MiB, MiB) == bytes([fill]) * MiB
    dwrite(drive.path, 31 * MiB, pattern(31, MiB))
    assert dread(drive.path, 31 * MiB, MiB) == pattern(31, MiB)
    assert dread(drive.path, 8 * MiB, 4096) == bytes(4096)  # untouched real flash is zero


def test_ioerror_fake_fails_past_real_and_works_below(fake: FakeFactory) -> None:
    """Reads and writes past the real size fail with EIO; below it the drive works."""
    drive = fake(FakeSpec(announced=128 * MiB, real=32 * MiB, kind="ioerror"))
    dwrite(drive.path, 32 * MiB - 4096, pattern(7, 4096))
    assert dread(drive.path, 32 * MiB - 4096, 4096) == pattern(7, 4096)
    assert errno_of(lambda: dread(drive.path, 32 * MiB, 4096)) == errno.EIO
    assert errno_of(lambda: dwrite(drive.path, 100 * MiB, pattern(1, 4096))) == errno.EIO


def test_cache_masks_a_fake_until_enough_other_data_is_written(fake: FakeFactory) -> None:
    """A small write past real reads back fine at once, but not after cache_bytes elsewhere."""
    drive = fake(FakeSpec(announced=256 * MiB, real=64 * MiB, kind="drop-zeros", cache_bytes=MiB))
    probe = 200 * MiB
    dwrite(drive.path, probe, pattern(probe, 4096))
    assert dread(drive.path, probe, 4096) == pattern(probe, 4096)  # served from the cache
    dwrite(drive.path, 0, pattern(0, 2 * MiB))  # more than cache_bytes of other data
    assert dread(drive.path, probe, 4096) == bytes(4096)  # the fake shows
    assert dread(drive.path, 0, 2 * MiB) == pattern(0, 2 * MiB)  # real flash kept the rest


def test_cache_evicts_through_wraparound(fake: FakeFactory) -> None:
    """Evicted cache pages take the fake path: a wraparound write lands on its alias."""
    drive = fake(FakeSpec(announced=128 * MiB, real=32 * MiB, kind="wraparound", cache_bytes=MiB))
    dwrite(drive.path, 32 * MiB + 5 * MiB, pattern(5, 8192))
    assert dread(drive.path, 5 * MiB, 8192) == bytes(8192)  # still only in the cache
    dwrite(drive.path, 20 * MiB, pattern(20, 2 * MiB))
    assert dread(drive.path, 5 * MiB, 8192) == pattern(5, 8192)


def test_bad_ranges_fail_reads_and_swallow_writes(fake: FakeFactory) -> None:
    """Reads touching a bad range fail with EIO; writes there are accepted; others work."""
    bad = (10 * MiB, 64 * 1024)
    drive = fake(FakeSpec.honest(64 * MiB, bad_ranges=(bad,)))
    dwrite(drive.path, 10 * MiB, pattern(1, 4096))  # accepted
    assert errno_of(lambda: dread(drive.path, 10 * MiB, 4096)) == errno.EIO
    assert errno_of(lambda: dread(drive.path, 9 * MiB, 2 * MiB)) == errno.EIO
    dwrite(drive.path, 10 * MiB + 64 * 1024, pattern(2, 4096))
    assert dread(drive.path, 10 * MiB + 64 * 1024, 4096) == pattern(2, 4096)


def test_ctl_switches_fail_readonly_and_ok(fake: FakeFactory) -> None:
    """Writing fail/readonly/ok to ctl makes all I/O fail, only writes fail, or heals."""
    drive = fake(FakeSpec.honest(64 * MiB))
    dwrite(drive.path, 0, pattern(0, 4096))
    drive.set_mode("fail")
    assert drive.mode() == "fail"
    assert errno_of(lambda: dread(drive.path, 0, 4096)) == errno.EIO
    assert errno_of(lambda: dwrite(drive.path, 0, pattern(1, 4096))) == errno.EIO
    drive.set_mode("readonly")
    assert dread(drive.path, 0, 4096) == pattern(0, 4096)
    assert errno_of(lambda: dwrite(drive.path, 0, pattern(1, 4096))) in (errno.EIO, errno.EROFS)
    drive.set_mode("ok")
    dwrite(drive.path, 0, pattern(2, 4096))
    assert dread(drive.path, 0, 4096) == pattern(2, 4096)
    with pytest.raises(ValueError):
        drive.set_mode("melt")


def test_fake_drive_throughput_is_usable(fake: FakeFactory) -> None:
    """1 MiB O_DIRECT I/O through loop and FUSE runs well above 50 MB/s each way."""
    drive = fake(FakeSpec(announced=256 * MiB, real=128 * MiB, kind="wraparound"))
    buf = mmap.mmap(-1, MiB)
    buf.write(pattern(0, MiB))
    fd = os.open(drive.path, os.O_RDWR | os.O_DIRECT)
    try:
        t0 = time.perf_counter()
        for i in range(128):
            os.pwrite(fd, buf, i * MiB)
        t1 = time.perf_counter()
        for i in range(128):
            os.preadv(fd, [buf], i * MiB)
        t2 = time.perf_counter()
    finally:
        os.close(fd)
    write_mbs, read_mbs = 128 * MiB / (t1 - t0) / 1e6, 128 * MiB / (t2 - t1) / 1e6
    print(f"fake drive: write {write_mbs:.0f} MB/s, read {read_mbs:.0f} MB/s")
    assert write_mbs > 50 and read_mbs > 50, (write_mbs, read_mbs)


# --------------------------------------------------------------------------- markers


def test_markers_are_found_then_gone_after_overwrite(loop: LoopFactory) -> None:
    """Every planted marker is found; after the device is overwritten none remain."""
    dev = loop(64 * MiB)
    assert write_markers(dev.path, dev.size) == 64
    assert find_markers(dev.path, dev.size) == [i * MiB for i in range(64)]
    zeros = bytes(8 * MiB)
    for off in range(0, dev.size, len(zeros)):
        dwrite(dev.path, off, zeros)
    assert find_markers(dev.path, dev.size) == []


def test_markers_show_aliasing_on_a_wraparound_fake(fake: FakeFactory) -> None:
    """Markers written across a wraparound fake survive only where the last alias wrote them."""
    drive = fake(FakeSpec(announced=128 * MiB, real=32 * MiB, kind="wraparound"))
    assert write_markers(drive.path, drive.real_bytes, every=4 * MiB) == 8
    assert find_markers(drive.path, drive.real_bytes) == [i * 4 * MiB for i in range(8)]
    dwrite(drive.path, 32 * MiB, bytes(MiB))  # past real: overwrites the marker at 0
    assert find_markers(drive.path, drive.real_bytes)[0] == 4 * MiB


def test_marker_block_is_one_aligned_block() -> None:
    """A marker is exactly one 4 KiB block, so it suits 512 and 4096 byte sectors."""
    from fdffd.sim.markers import MAGIC, marker_block

    block = marker_block(123 * MiB)
    assert len(block) == BLOCK and block.startswith(MAGIC)


# --------------------------------------------------------------------------- cleanup


def test_fixtures_leave_no_loop_mount_or_process(fuse_support: None) -> None:
    """After a fake drive and a loop device are released, nothing of theirs is left."""
    with fake_drive(FakeSpec(announced=64 * MiB, real=16 * MiB, kind="ioerror")) as drive:
        assert drive.loop is not None
        disk, mnt, workdir = drive.loop.backing, drive.mountpoint, drive.workdir
        assert mounted(mnt)
        dwrite(drive.path, 0, pattern(0, 4096))
    assert loops_backed_by(disk) == []
    assert (
        str(disk)
        not in subprocess.run(
            ["losetup", "-l", "-n", "-O", "BACK-FILE"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert not mounted(mnt)
    assert drive.server.poll() is not None
    assert not workdir.exists()


def test_teardown_copes_with_a_killed_server(fuse_support: None) -> None:
    """If the FUSE server dies mid-test, I/O fails with EIO and teardown still cleans up."""
    with fake_drive(FakeSpec.honest(32 * MiB)) as drive:
        assert drive.loop is not None
        disk, mnt = drive.loop.backing, drive.mountpoint
        drive.kill_server(signal.SIGKILL)
        drive.server.wait(timeout=10)
        assert errno_of(lambda: dread(drive.path, 0, 4096)) == errno.EIO
    assert loops_backed_by(disk) == []
    assert not mounted(mnt)


def test_teardown_kills_a_hung_server(fuse_support: None) -> None:
    """If the server hangs with I/O in flight, teardown kills it and the I/O fails with EIO."""
    outcome: list[object] = []
    with fake_drive(FakeSpec.honest(32 * MiB), stuck_after=1.0) as drive:
        assert drive.loop is not None
        disk, mnt = drive.loop.backing, drive.mountpoint
        drive.kill_server(signal.SIGSTOP)

        def blocked_read() -> None:
            try:
                outcome.append(dread(drive.path, 0, 4096))
            except OSError as exc:
                outcome.append(exc.errno)

        reader = threading.Thread(target=blocked_read)
        reader.start()
        time.sleep(0.3)
        assert reader.is_alive()  # stuck on the hung server
    reader.join(10)
    assert outcome == [errno.EIO]
    assert loops_backed_by(disk) == []
    assert not mounted(mnt)


def test_teardown_kills_a_server_that_hangs_a_flush(fuse_support: None) -> None:
    """Dirty page-cache data for a hung server cannot block teardown: the server is killed."""
    with fake_drive(FakeSpec.honest(32 * MiB), stuck_after=1.0) as drive:
        assert drive.loop is not None
        disk, server = drive.loop.backing, drive.server
        fd = os.open(drive.path, os.O_WRONLY)  # buffered: the flush happens at the last close
        try:
            # dirty the page cache while the server still answers: a buffered write after the
            # stop could wait behind a reader (udev probing the new device) stuck on it
            os.pwrite(fd, pattern(0, 65536), 0)
            drive.kill_server(signal.SIGSTOP)
        finally:
            os.close(fd)
        started = time.monotonic()
    assert time.monotonic() - started < 8
    assert server.returncode == -signal.SIGKILL
    assert loops_backed_by(disk) == []


def test_teardown_with_the_device_still_open(fuse_support: None) -> None:
    """A descriptor left open across teardown fails afterwards and the loop clears on close."""
    with fake_drive(FakeSpec.honest(32 * MiB)) as drive:
        assert drive.loop is not None
        disk, mnt = drive.loop.backing, drive.mountpoint
        fd = os.open(drive.path, os.O_RDWR | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 4096)
        assert errno_of(lambda: os.preadv(fd, [buf], 0)) == errno.EIO
        assert not mounted(mnt)
    finally:
        os.close(fd)
    deadline = time.monotonic() + 5
    while loops_backed_by(disk) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loops_backed_by(disk) == []


def test_bad_spec_is_refused_when_built() -> None:
    """Impossible specs fail at construction with the reason."""
    with pytest.raises(ValueError, match="real"):
        FakeSpec(announced=MiB, real=2 * MiB, kind="wraparound")
    with pytest.raises(ValueError, match="kind"):
        FakeSpec(announced=2 * MiB, real=MiB, kind="shrink")
    with pytest.raises(ValueError, match="honest"):
        FakeSpec(announced=2 * MiB, real=MiB)
    with pytest.raises(ValueError, match="bad range"):
        FakeSpec.honest(MiB, bad_ranges=((MiB - 512, 1024),))
    spec = FakeSpec(2 * MiB, MiB, "drop-ff", 8192, ((0, 512),))
    assert FakeSpec.from_json(spec.to_json()) == spec


# --------------------------------------------------------------------------- the model, no FUSE


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 64 * 1024 - 1), st.integers(1, 12 * 1024)),
        max_size=30,
    )
)
def test_cache_is_invisible_on_an_honest_drive(ops: list[tuple[bool, int, int]]) -> None:
    """With any mix of unaligned reads and writes, a cached honest drive acts like plain memory."""
    size = 64 * 1024
    fd = os.memfd_create("flash")
    try:
        os.ftruncate(fd, size)
        media = FakeMedia(FakeSpec.honest(size, cache_bytes=2 * CACHE_PAGE), fd)
        model = bytearray(size)
        for is_write, off, n in ops:
            n = min(n, size - off)
            if is_write:
                data = pattern(off * 7 + n, n)
                assert media.write(off, data) == n
                model[off : off + n] = data
            else:
                assert media.read(off, n) == bytes(model[off : off + n])
    finally:
        os.close(fd)
