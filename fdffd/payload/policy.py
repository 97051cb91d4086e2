"""What a station accepts at import and before use: its ``[payload]`` settings, loaded.

``ImportPolicy`` gathers the metadata rule (``fdffd.payload.metadata``) and the trusted
curator keys (``fdffd.payload.signing``).  Built from the config with ``from_settings``,
which reads the key files ``payload.trusted_keys`` names (a bad one is a ``UsageError``
naming it).  ``ImportPolicy()`` is the default station: metadata refused, no keys, unsigned
content accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fdffd.config import Config, PayloadSection

from .metadata import MetadataMode
from .signing import Trust
from .store import VERSIONS_DIR, check_before_job, open_profile


@dataclass(frozen=True)
class ImportPolicy:
    metadata: MetadataMode = "refuse"
    metadata_allow: tuple[str, ...] = ()
    trust: Trust = field(default_factory=Trust)

    @classmethod
    def from_settings(cls, settings: PayloadSection) -> ImportPolicy:
        return cls(settings.metadata, tuple(settings.metadata_allow), Trust.from_settings(settings))


def check_station_content(config: Config) -> None:
    """What the daemon checks as it starts (and ``fdffd --check-config``): the trusted key
    files load, and with ``require_signed`` the profile jobs use (``job.profile``), when it
    has been imported, passes ``check_before_job`` with its signature.  ``UsageError`` or
    ``PayloadError`` naming the file and the reason."""
    settings = config.payload
    Trust.from_settings(settings)
    name = config.job.profile
    if not settings.require_signed or not name:
        return
    if not (config.station.payload_dir / name / VERSIONS_DIR).is_dir():
        return  # never imported: each job says so (docs/configuration.md)
    with open_profile(config.station.payload_dir, name) as profile:
        check_before_job(profile, settings)
