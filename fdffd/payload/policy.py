"""What a station accepts at import and before use: its ``[payload]`` settings, loaded.

``ImportPolicy`` gathers the metadata rule (``fdffd.payload.metadata``) and the trusted
curator keys (``fdffd.payload.signing``).  Built from the config with ``from_settings``,
which reads the key files ``payload.trusted_keys`` names (a bad one is a ``UsageError``
naming it).  ``ImportPolicy()`` is the default station: metadata refused, no keys, unsigned
content accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fdffd.config import PayloadSection

from .metadata import MetadataMode
from .signing import Trust


@dataclass(frozen=True)
class ImportPolicy:
    metadata: MetadataMode = "refuse"
    metadata_allow: tuple[str, ...] = ()
    trust: Trust = field(default_factory=Trust)

    @classmethod
    def from_settings(cls, settings: PayloadSection) -> ImportPolicy:
        return cls(settings.metadata, tuple(settings.metadata_allow), Trust.from_settings(settings))
