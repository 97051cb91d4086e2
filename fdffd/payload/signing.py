"""Curators' Ed25519 signatures over profile manifests, and the keys a station trusts.

A curator signs a profile version's manifest (its canonical bytes, which hash every file)
with a private key of their own; the signature travels in the bundle
(``fdffd.payload.bundle``) and is kept beside the manifest as ``signature.json``::

    {"algorithm":"ed25519","key":"<base64 public key>","manifest_sha256":"<hex>",
     "schema":1,"signature":"<base64>"}

The signed message is ``b"fdffd payload manifest v1\\n"`` followed by the manifest's bytes
(the prefix keeps a manifest signature from meaning anything else).  Signatures are
deterministic: the same key and manifest give the same bytes.

A station lists the public keys it trusts in ``payload.trusted_keys`` (a path to a key file,
PEM as ``openssl pkey -pubout`` writes it, or the base64 of the raw 32 bytes, as ``fdffctl
payload keygen`` prints it).  ``check_signature`` is the one rule, at import and before use:
a signature that does not verify (the manifest or the signature was changed) is refused
always; with ``payload.require_signed`` an unsigned manifest, or one signed by a key not in
``trusted_keys``, is refused too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fdffd.config import PayloadSection
from fdffd.errors import PayloadError, UsageError
from fdffd.fsutil import fsync_dir, write_all
from fdffd.text import shown

from .manifest import canonical_json

SIGNATURE_FILE = "signature.json"
CONTEXT = b"fdffd payload manifest v1\n"
_MAX_KEY_FILE = 64 * 1024
_B64_32 = r"^[A-Za-z0-9+/]{43}=$"
_B64_64 = r"^[A-Za-z0-9+/]{86}==$"


def key_text(public: Ed25519PublicKey) -> str:
    """A public key as the base64 of its raw 32 bytes: how config and signatures name it."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def _key_from_text(text: str) -> Ed25519PublicKey | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return Ed25519PublicKey.from_public_bytes(raw) if len(raw) == 32 else None


def parse_public_key(data: bytes) -> Ed25519PublicKey:
    """A public key from a file's bytes: PEM (SubjectPublicKeyInfo), one line of base64 of
    the raw key, or the 32 raw bytes.  ``ValueError`` saying why not."""
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"it is a {type(key).__name__.removeprefix('_')}, not Ed25519")
        return key
    found = _key_from_text(data.decode("ascii", "replace"))
    if found is None:
        raise ValueError("neither PEM, nor base64 of 32 bytes, nor 32 raw bytes")
    return found


def load_trusted_key(entry: str) -> Ed25519PublicKey:
    """One entry of ``payload.trusted_keys``; ``UsageError`` naming the key and the file."""
    if not entry.startswith("/"):
        found = _key_from_text(entry)
        if found is None:
            raise UsageError(f"payload.trusted_keys: {entry[:60]!r} is not a public key")
        return found
    try:
        with open(entry, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as err:
        raise UsageError(
            f"payload.trusted_keys: {shown(entry)}: cannot read: {err.strerror}"
        ) from None
    try:
        return parse_public_key(data)
    except ValueError as err:
        raise UsageError(
            f"payload.trusted_keys: {shown(entry)}: not an Ed25519 public key ({err})"
        ) from None


@dataclass(frozen=True)
class Trust:
    """The curator keys a station trusts (by ``key_text``), and whether it takes only
    signed content."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    require_signed: bool = False

    @classmethod
    def from_settings(cls, settings: PayloadSection) -> Trust:
        keys = {key_text(k): k for k in map(load_trusted_key, settings.trusted_keys)}
        return cls(keys, settings.require_signed)


# --- signatures -------------------------------------------------------------------------


class Signature(BaseModel):
    """A curator's signature over one manifest (``signature.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schema")
    algorithm: Literal["ed25519"] = "ed25519"
    key: str = Field(pattern=_B64_32)
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(pattern=_B64_64)

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", by_alias=True))


def parse_signature(raw: bytes, *, where: str, profile: str) -> Signature:
    """``signature.json``'s bytes, validated; ``PayloadError`` naming ``where``."""
    try:
        return Signature.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "signature"
        raise PayloadError(
            f"{where} is not a signature fdffd can read ({key}: {first['msg']}); the bundle "
            "was damaged or changed after it was signed",
            profile=profile,
        ) from None


def sign_manifest(manifest_bytes: bytes, private: Ed25519PrivateKey) -> Signature:
    """The signature of ``private`` over ``manifest_bytes``."""
    return Signature(
        key=key_text(private.public_key()),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        signature=base64.b64encode(private.sign(CONTEXT + manifest_bytes)).decode("ascii"),
    )


@dataclass(frozen=True)
class SignatureStatus:
    """What ``check_signature`` found: signed or not, by which key, trusted or not."""

    key: str | None = None
    trusted: bool = False

    @property
    def signed(self) -> bool:
        return self.key is not None

    def describe(self) -> str:
        if self.key is None:
            return "not signed"
        return f"signed by {'trusted' if self.trusted else 'UNTRUSTED'} key {self.key}"


UNSIGNED = SignatureStatus()


def check_signature(
    manifest_bytes: bytes,
    signature: Signature | None,
    trust: Trust,
    *,
    where: str,
    profile: str,
) -> SignatureStatus:
    """Apply the signature rule to a manifest (``where`` names its file in messages):
    refuse a signature that does not verify; with ``trust.require_signed`` refuse an
    unsigned manifest and one signed by an untrusted key.  ``PayloadError`` saying which."""
    required = "this station takes only signed content (payload.require_signed = true)"
    if signature is None:
        if trust.require_signed:
            raise PayloadError(
                f"{where} is not signed, and {required}: ask a curator for a signed bundle "
                "and import it with `fdffctl payload import BUNDLE`",
                profile=profile,
            )
        return SignatureStatus()
    actual = hashlib.sha256(manifest_bytes).hexdigest()
    if signature.manifest_sha256 != actual:
        raise PayloadError(
            f"{where}: the signature is for manifest {signature.manifest_sha256[:12]}, this "
            f"manifest is {actual[:12]}: the manifest or the signature was changed after "
            "signing",
            profile=profile,
        )
    trusted = signature.key in trust.keys
    if trust.require_signed and not trusted:
        raise PayloadError(
            f"{where} is signed by key {signature.key}, which is not in payload.trusted_keys, "
            f"and {required}: add the curator's key to trusted_keys if you trust it",
            profile=profile,
        )
    public = trust.keys.get(signature.key) or _key_from_text(signature.key)
    try:
        if public is None:
            raise InvalidSignature
        public.verify(base64.b64decode(signature.signature), CONTEXT + manifest_bytes)
    except (InvalidSignature, binascii.Error, ValueError):
        raise PayloadError(
            f"{where}: the signature by key {signature.key} does not verify: the manifest or "
            "the signature was changed after signing",
            profile=profile,
        ) from None
    return SignatureStatus(signature.key, trusted)


def check_version_signature(
    vdir: Path, version: str, trust: Trust, *, profile: str
) -> SignatureStatus:
    """The signature rule applied to a stored version ``vdir``: its ``manifest.json``
    (which must still hash to ``version``) and its ``signature.json``, if any.
    ``PayloadError`` naming the file and the reason."""
    manifest_path = vdir / "manifest.json"
    try:
        raw = manifest_path.read_bytes()
    except OSError as err:
        raise PayloadError(
            f"cannot read manifest {manifest_path}: {err.strerror}", profile=profile
        ) from None
    if hashlib.sha256(raw).hexdigest() != version:
        raise PayloadError(
            f"manifest {manifest_path} was changed after import (its SHA-256 is not its "
            "version id)",
            profile=profile,
        )
    sig_path = vdir / SIGNATURE_FILE
    try:
        sig_raw = sig_path.read_bytes()
    except FileNotFoundError:
        signature = None
    except OSError as err:
        raise PayloadError(
            f"cannot read signature {sig_path}: {err.strerror}", profile=profile
        ) from None
    else:
        signature = parse_signature(sig_raw, where=str(sig_path), profile=profile)
    return check_signature(
        raw, signature, trust, where=f"manifest {manifest_path}", profile=profile
    )


# --- curators' keys ---------------------------------------------------------------------


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """A curator's signing key: PEM (PKCS#8, unencrypted) as ``openssl genpkey -algorithm
    ed25519`` or ``fdffctl payload keygen`` writes it, readable by its owner only.
    ``UsageError`` saying what is wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise UsageError(
            f"{shown(str(path))}: cannot read the signing key: {err.strerror}"
        ) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{shown(str(path))}: the signing key is not a regular file")
        if st.st_mode & 0o077:
            raise UsageError(
                f"{shown(str(path))}: the signing key can be read by others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): `chmod 600 {shown(str(path))}`, and "
                "consider it leaked if others could reach it"
            )
        data = f.read(_MAX_KEY_FILE + 1)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(
            f"{shown(str(path))}: the signing key is encrypted; fdffctl takes an unencrypted "
            "key (keep it on an offline machine or a removable drive)"
        ) from None
    except ValueError as err:
        raise UsageError(f"{shown(str(path))}: not a PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{shown(str(path))}: the signing key is not Ed25519")
    return key


def _create(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise UsageError(f"{shown(str(path))} exists; choose another name") from None
    except OSError as err:
        raise UsageError(f"{shown(str(path))}: cannot create: {err.strerror}") from None
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
    finally:
        os.close(fd)


def generate_key(path: Path) -> Ed25519PublicKey:
    """Write a new curator key to ``path`` (PEM, 0600) and its public key to
    ``path.pub`` (PEM, 0644); neither may exist.  Returns the public key."""
    path = Path(path)
    pub_path = path.with_name(path.name + ".pub")
    if pub_path.exists():
        raise UsageError(f"{shown(str(pub_path))} exists; choose another name")
    private = Ed25519PrivateKey.generate()
    _create(
        path,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    public = private.public_key()
    _create(
        pub_path,
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    fsync_dir(path.parent if str(path.parent) else Path("."))
    return public
