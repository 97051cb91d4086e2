"""A fake drive's behaviour (``FakeMedia``, the model the FUSE fakes serve) as a probe ``Disk``.

The same code the FUSE fakes run, over a sparse memfd and without FUSE or a loop device, so
property tests can try many sizes in seconds.  The whole-job tests use the FUSE fakes.
"""

from __future__ import annotations

import os
from types import TracebackType

from fdffd.devices.disk import Geometry
from fdffd.errors import DeviceIOError

from .fakemedia import FakeMedia, FakeSpec


class MediaDisk:
    """A ``Disk`` (``fdffd.devices.disk``) over a ``FakeMedia``."""

    def __init__(self, spec: FakeSpec) -> None:
        self.spec = spec
        #: set by the job before each stage (the Disk protocol)
        self.stage = "probe"
        self._path = "mediadisk"
        self._fd = os.memfd_create("fdffd-test-flash")
        os.ftruncate(self._fd, spec.flash_bytes)
        self.media = FakeMedia(spec, self._fd)

    @property
    def path(self) -> str:
        return self._path

    @property
    def size(self) -> int:
        return self.spec.announced

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.spec.announced, 512, 4096, read_only=False)

    def gone(self) -> bool:
        return False

    def reread_partitions(self) -> None:
        pass

    @property
    def real(self) -> int:
        return self.spec.real

    def pread(self, buf: memoryview, offset: int) -> None:
        try:
            data = self.media.read(offset, len(buf))
        except OSError as err:
            raise DeviceIOError(
                str(err), device=self.path, stage=self.stage, offset=offset
            ) from None
        buf[: len(data)] = data

    def pwrite(self, buf: memoryview, offset: int) -> None:
        try:
            self.media.write(offset, bytes(buf))
        except OSError as err:
            raise DeviceIOError(
                str(err), device=self.path, stage=self.stage, offset=offset
            ) from None

    def flush(self) -> None:
        self.media.flush()

    def close(self) -> None:
        self.media.close()
        os.close(self._fd)

    def __enter__(self) -> MediaDisk:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
