"""FAT directories as Windows' copy creates them: the payload tree, entry order,
short and long names, timestamps.  Pure; ``fat32.py`` places what this builds.

Inside a directory, subdirectories come first, then files, each in *natural* order
(case-insensitive, digit runs compared as numbers): cheap media players list
entries in directory order, so episode "2화" comes before "10화", and that is the
order the copy creates them in.  Names that are valid 8.3 names get no LFN; all
lower-case parts use the NT case bits, as Windows NT and later do.  Attributes:
ARCHIVE for files, DIRECTORY for directories; no extra entries.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from fdffd.errors import FileTooLargeError, NameNotAllowedError, UsageError
from fdffd.imaging.dates import CopyItem, EntryTimes
from fdffd.imaging.names import (
    ShortName,
    assign_short_names,
    check_tree,
    fold_case,
    lfn_checksum,
    utf16_units,
)
from fdffd.imaging.types import FileEntry, Tree

ENTRY = 32
LFN_UNITS = 13
MAX_FILE_BYTES = 0xFFFFFFFF  # DIR_FileSize is 32 bits
MAX_DIR_ENTRIES = 65536  # fatgen103: a directory holds at most 65,536 32-byte entries
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LFN = 0x0F


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class FatDir:
    """One directory of the payload, with where it went once placed."""

    path: str
    dirs: dict[str, FatDir] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    cluster: int = 0
    clusters: int = 0
    children: list[Child] = field(default_factory=list)


@dataclass(frozen=True)
class Child:
    name: str
    short: ShortName
    node: FatDir | None
    file: FileEntry | None
    #: its place in the payload's priority (0 first; equal for all without one)
    rank: int = 0

    @property
    def path(self) -> str:
        if self.node is not None:
            return self.node.path
        assert self.file is not None
        return self.file.path


def natural_key(name: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    parts = re.split(r"([0-9]+)", fold_case(name))
    key = tuple(
        (0, int(part), part) if i % 2 else (1, 0, part) for i, part in enumerate(parts) if part
    )
    return key, name


def refuse(path: str, detail: str) -> NameNotAllowedError:
    return NameNotAllowedError(path=path, detail=detail)


def build_tree(tree: Tree, codepage: str) -> list[FatDir]:
    """The directories of ``tree`` in pre-order (root first), children named and ordered."""
    check_tree([*tree.dirs, *(f.path for f in tree.files)])
    root = FatDir("")
    file_paths = {f.path for f in tree.files}

    def ensure(path: str) -> FatDir:
        node = root
        sofar = ""
        for part in path.split("/"):
            sofar = f"{sofar}/{part}" if sofar else part
            if sofar in file_paths:
                raise refuse(sofar, "is both a file and a directory in the payload")
            node = node.dirs.setdefault(part, FatDir(sofar))
        return node

    for d in tree.dirs:
        ensure(d)
    for f in tree.files:
        _check_file(f)
        parent, _, name = f.path.rpartition("/")
        node = ensure(parent) if parent else root
        if name in node.files:
            raise refuse(f.path, "is listed twice in the payload")
        node.files[name] = f
    order = list(_walk(root, tree.rank))
    for node in order:
        node.children = _children(node, codepage, tree.rank)
    return order


def _check_file(f: FileEntry) -> None:
    if f.size < 0:
        raise refuse(f.path, f"negative size {f.size}")
    if f.size > MAX_FILE_BYTES:
        raise FileTooLargeError(path=f.path, size=f.size, filesystem="FAT32", limit=MAX_FILE_BYTES)


def _ranked(node: FatDir, names: Iterable[str], rank: Callable[[str], int]) -> list[str]:
    """``names`` of ``node``'s children, the payload's priority first, then by name."""
    base = f"{node.path}/" if node.path else ""
    return sorted(names, key=lambda n: (rank(base + n), natural_key(n)))


def _walk(node: FatDir, rank: Callable[[str], int]) -> Iterator[FatDir]:
    yield node
    for name in _ranked(node, node.dirs, rank):
        yield from _walk(node.dirs[name], rank)


def _children(node: FatDir, codepage: str, rank: Callable[[str], int]) -> list[Child]:
    dirs = _ranked(node, node.dirs, rank)
    files = _ranked(node, node.files, rank)
    shorts = assign_short_names(dirs + files, codepage)
    kids = [Child(n, shorts[n], node.dirs[n], None, rank(node.dirs[n].path)) for n in dirs] + [
        Child(n, shorts[n], None, node.files[n], rank(node.files[n].path)) for n in files
    ]
    return sorted(kids, key=lambda kid: kid.rank)  # stable: without a priority, dirs first


def copied_files(order: list[FatDir]) -> list[Child]:
    """The files in the order the copy writes them: by priority, then pre-order."""
    kids = [kid for node in order for kid in node.children if kid.file is not None]
    return sorted(kids, key=lambda kid: kid.rank)


def copy_order(order: list[FatDir]) -> list[CopyItem]:
    """Entries in the order the copy creates them and allocates their clusters:
    the directory tree first (pre-order), then the files in the same order."""
    dirs = [CopyItem(node.path, None) for node in order[1:]]
    files = [CopyItem(kid.file.path, kid.file.size) for kid in copied_files(order) if kid.file]
    return dirs + files


def entry_count(node: FatDir, has_label: bool) -> int:
    """32-byte entries ``node`` needs; refuses a directory FAT cannot hold."""
    n = (2 if node.path else (1 if has_label else 0)) + sum(
        1 + (ceil_div(utf16_units(k.name), LFN_UNITS) if k.short.lfn else 0) for k in node.children
    )
    if n > MAX_DIR_ENTRIES:
        raise refuse(
            node.path or "/",
            f"this directory needs {n} directory entries, FAT32 allows {MAX_DIR_ENTRIES}; "
            "spread its files over subdirectories or use shorter names",
        )
    return n


# --- on-disk encodings ------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    """An entry's FAT times: creation (with 10-ms units), last access date, last write."""

    crt_tenth: int
    crt_time: int
    crt_date: int
    acc_date: int
    wrt_time: int
    wrt_date: int


def _dos(ts: datetime) -> tuple[int, int]:
    if not 1980 <= ts.year <= 2107:
        raise UsageError(f"FAT timestamps run from 1980 to 2107, not {ts.isoformat()}")
    date = ((ts.year - 1980) << 9) | (ts.month << 5) | ts.day
    time = (ts.hour << 11) | (ts.minute << 5) | (ts.second // 2)
    return date, time


def stamp(times: EntryTimes) -> Stamp:
    """FAT's encoding of ``times`` (naive local times; a tzinfo is ignored)."""
    crt_date, crt_time = _dos(times.created)
    tenth = (times.created.second % 2) * 100 + times.created.microsecond // 10_000
    acc_date, _ = _dos(times.accessed)
    wrt_date, wrt_time = _dos(times.modified)
    return Stamp(tenth, crt_time, crt_date, acc_date, wrt_time, wrt_date)


def short_entry(raw: bytes, attr: int, case: int, cluster: int, size: int, st: Stamp) -> bytes:
    return struct.pack(
        "<11sBBBHHHHHHHI",
        raw,
        attr,
        case,
        st.crt_tenth,
        st.crt_time,
        st.crt_date,
        st.acc_date,
        cluster >> 16,
        st.wrt_time,
        st.wrt_date,
        cluster & 0xFFFF,
        size,
    )


def label_entry(raw11: bytes, attr: int, when: datetime) -> bytes:
    """A volume-label entry as newfs_msdos writes it: only the write time is set."""
    date, time = _dos(when)
    return struct.pack("<11sB10xHHHI", raw11, attr, time, date, 0, 0)


def lfn_entries(name: str, checksum: int) -> bytes:
    """The LFN chain of ``name``, last part first, as it precedes the short entry."""
    units = name.encode("utf-16-le", "surrogatepass")
    count = ceil_div(len(units) // 2, LFN_UNITS)
    if len(units) // 2 % LFN_UNITS:
        units += b"\x00\x00"
    units += b"\xff\xff" * (count * LFN_UNITS - len(units) // 2)
    out = []
    for seq in range(count, 0, -1):
        part = units[(seq - 1) * 2 * LFN_UNITS : seq * 2 * LFN_UNITS]
        order = seq | (0x40 if seq == count else 0)
        out.append(
            bytes([order])
            + part[0:10]
            + bytes([ATTR_LFN, 0, checksum])
            + part[10:22]
            + b"\x00\x00"
            + part[22:26]
        )
    return b"".join(out)


def directory_bytes(
    node: FatDir,
    *,
    parent_cluster: int,
    head: bytes,
    times: Mapping[str, EntryTimes],
    file_cluster: Mapping[str, int],
    cluster_bytes: int,
) -> bytes:
    """The clusters of ``node``: ``head`` (the root's label entry), '.' and '..' for a
    subdirectory, then every child's LFN chain and short entry; zero after the last."""
    parts = [head]
    if node.path:
        made = times[node.path].created  # '.' and '..' keep the directory's creation
        first = stamp(EntryTimes(made, made, made))
        parts.append(short_entry(b".          ", ATTR_DIRECTORY, 0, node.cluster, 0, first))
        parts.append(short_entry(b"..         ", ATTR_DIRECTORY, 0, parent_cluster, 0, first))
    for kid in node.children:
        if kid.short.lfn:
            parts.append(lfn_entries(kid.name, lfn_checksum(kid.short.raw)))
        if kid.node is not None:
            attr, cluster, size = ATTR_DIRECTORY, kid.node.cluster, 0
        else:
            assert kid.file is not None
            attr, size = ATTR_ARCHIVE, kid.file.size
            cluster = file_cluster.get(kid.file.path, 0)
        st = stamp(times[kid.path])
        parts.append(short_entry(kid.short.raw, attr, kid.short.case_bits, cluster, size, st))
    data = b"".join(parts)
    return data + bytes(node.clusters * cluster_bytes - len(data))
