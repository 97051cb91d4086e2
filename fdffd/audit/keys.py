"""The station's keys: the Ed25519 signing key of the audit log, and the program's audit
public key that identifying fields are sealed to (:mod:`fdffd.audit.seal`).

Files in the state dir (named in ``fdffd.statedir``), created only by ``fdffctl keys init``
(:meth:`StationKeys.init`); :meth:`StationKeys.load` never creates one:

- ``station.key``: Ed25519 private key, PEM (PKCS#8, unencrypted), mode 0600.
- ``station.pub``: its public key, PEM (SubjectPublicKeyInfo), mode 0644.  Give this to
  auditors; ``fdffctl audit verify`` needs nothing else.
- ``audit-seal.pub``: the program's audit public key (X25519, base64), stored by
  ``fdffctl keys init --audit-pubkey FILE``.  Its private half never is on a station.

Creation is atomic and race-free (``fdffd.fsutil.create_exclusive``): each file is written to
a private temp file, fsynced, then ``os.link``-ed to its final name.  ``link`` fails if the name
exists, so when two processes start at once exactly one wins and both then read the winner's
file.

Secret files are refused when they are not regular files, are group- or world-accessible, or
are owned by anyone but root (or the effective user of this process, for unprivileged tests
and tools).
"""

from __future__ import annotations

import base64
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fdffd.errors import AuditError, UsageError
from fdffd.fsutil import create_exclusive
from fdffd.statedir import StateDir

from .seal import Sealer, read_key_file

_MAX_KEY_FILE = 64 * 1024


def public_key_hex(public_key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as hex: a short fingerprint to print and compare."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a station public key (PEM, or 32 raw bytes).  Raises :class:`AuditError`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(path=path, detail=f"cannot read public key: {exc.strerror}") from exc
    return _parse_public_key(path, data)


def _parse_public_key(path: Path, data: bytes) -> Ed25519PublicKey:
    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise AuditError(path=path, detail=f"not an Ed25519 public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(path=path, detail="public key is not Ed25519")
    return key


@dataclass(frozen=True)
class StationKeys:
    """The loaded keys of one station.  Build it with :meth:`load` (or :meth:`init`)."""

    private_key: Ed25519PrivateKey = field(repr=False)
    public_key: Ed25519PublicKey = field(repr=False)
    audit_public_key: bytes | None = field(default=None, repr=False)
    state_dir: Path | None = None

    @classmethod
    def generate(cls) -> StationKeys:
        """Fresh keys held only in memory (tests, and a second key to forge lines with)."""
        private = Ed25519PrivateKey.generate()
        return cls(private, private.public_key())

    @classmethod
    def load(cls, state_dir: Path) -> StationKeys:
        """Load the station keys from ``state_dir``; never creates one.  Raises
        :class:`UsageError` (exit 2) naming ``fdffctl keys init`` when the signing key is
        missing, :class:`AuditError` when a key file is unsafe or malformed."""
        files = StateDir(Path(state_dir))
        if not files.private_key.exists() or not files.public_key.exists():
            raise UsageError(
                f"{files.private_key}: this station has no keys: run `fdffctl keys init "
                "--audit-pubkey FILE` once (jobs are refused until then; a key is never "
                "created silently)"
            )
        return cls.init(state_dir)

    @classmethod
    def init(cls, state_dir: Path, audit_public_key: bytes | None = None) -> StationKeys:
        """Load the station keys from ``state_dir``, first creating any that are missing
        (``fdffctl keys init`` only), and store ``audit_public_key`` if none is stored.

        Raises :class:`AuditError` when a key file is unsafe (permissions, owner, not a regular
        file), unreadable, malformed, when ``station.pub`` does not match ``station.key``, or
        when a different audit public key is stored already (never replaced silently).
        """
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(
                path=state_dir, detail=f"cannot create state dir: {exc.strerror}"
            ) from exc

        files = StateDir(state_dir)
        key_path = files.private_key
        pem = _read_or_create_secret(key_path, _new_private_key_pem)
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise AuditError(path=key_path, detail=f"not a usable private key: {exc}") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise AuditError(path=key_path, detail="private key is not Ed25519")
        public = private.public_key()

        pub_path = files.public_key
        pub_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _create_exclusive(pub_path, pub_pem, 0o644)
        on_disk = load_public_key(pub_path)
        if public_key_hex(on_disk) != public_key_hex(public):
            raise AuditError(
                path=pub_path,
                detail=f"does not match {key_path}: refusing to sign with a key auditors "
                "cannot check (remove the stale public key if the private key is right)",
            )

        audit_pub = None
        if audit_public_key is not None:
            text = base64.b64encode(audit_public_key) + b"\n"
            _create_exclusive(files.audit_seal_key, text, 0o644)
        if files.audit_seal_key.exists():
            audit_pub = read_key_file(files.audit_seal_key)
        if audit_public_key is not None and audit_pub != audit_public_key:
            raise AuditError(
                path=files.audit_seal_key,
                detail="holds a different audit public key: refusing to replace it silently "
                "(remove it first if the program's audit key really changed)",
            )
        return cls(private, public, audit_pub, state_dir)

    def sign(self, message: bytes) -> str:
        """Ed25519 signature of ``message``, as 128 lowercase hex digits."""
        return self.private_key.sign(message).hex()

    @property
    def sealer(self) -> Sealer | None:
        """What seals identifying fields; None (they are dropped) without an audit key."""
        return None if self.audit_public_key is None else Sealer(self.audit_public_key)

    @property
    def fingerprint(self) -> str:
        """The public key as hex."""
        return public_key_hex(self.public_key)


def verify_signature(public_key: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    """True when ``signature_hex`` is a valid Ed25519 signature of ``message``."""
    try:
        signature = bytes.fromhex(signature_hex)
        public_key.verify(signature, message)
    except (ValueError, InvalidSignature):
        return False
    return True


def _new_private_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _read_or_create_secret(path: Path, make: Callable[[], bytes]) -> bytes:
    """Read the secret file at ``path``, first creating it from ``make()`` if it is missing."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    _create_exclusive(path, make(), 0o600)
    try:
        return _read_secret(path)
    except FileNotFoundError as exc:
        raise AuditError(path=path, detail="vanished right after it was created") from exc


def _read_secret(path: Path) -> bytes:
    """Read a secret file after checking it is a private, root-owned regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AuditError(path=path, detail="is a symlink: refusing to use it") from exc
        raise AuditError(path=path, detail=f"cannot open: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AuditError(path=path, detail="is not a regular file")
        if st.st_uid not in {0, os.geteuid()}:
            raise AuditError(
                path=path, detail=f"is owned by uid {st.st_uid}, not root: refusing to use it"
            )
        if st.st_mode & 0o077:
            raise AuditError(
                path=path,
                detail=f"has mode {stat.S_IMODE(st.st_mode):04o}: group or others can access "
                "it; it must be 0600 (chmod 600 it only if you trust it was not copied)",
            )
        if st.st_size > _MAX_KEY_FILE:
            raise AuditError(path=path, detail=f"is {st.st_size} bytes: too large for a key")
        chunks = []
        while chunk := os.read(fd, _MAX_KEY_FILE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Atomically create ``path`` holding ``data``; False if it already existed.

    The content is complete and fsynced before the name appears, so a reader never sees a
    half-written key, and ``os.link`` refuses to replace an existing file
    (:func:`fdffd.fsutil.create_exclusive`).
    """
    if path.exists():
        return False  # nothing to write: a read-only or full state dir is no error then
    try:
        return create_exclusive(path, data, mode=mode)
    except OSError as exc:
        raise AuditError(path=path, detail=f"cannot create: {exc.strerror}") from exc
