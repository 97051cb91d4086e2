"""The name rules live in fdffd.names: labels and profile names as the writers and the store
apply them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fdffd.config import PROFILE_PATTERN, config_from_dict
from fdffd.errors import ConfigError, UsageError
from fdffd.imaging import exfat, fat32
from fdffd.names import LABEL_RULES, PROFILE_NAME_PATTERN, check_exfat_label, check_fat32_label
from fdffd.payload.manifest import PROFILE_NAME_PATTERN as MANIFEST_PROFILE_NAME_PATTERN

labels = st.text(max_size=14) | st.text(alphabet="ABCabc 09!#~*?:é한\x01", max_size=13)


def _outcome(check: object, label: str) -> str:
    try:
        return f"ok {check(label)}"  # type: ignore[operator]
    except UsageError as err:
        return f"refused {err.message}"


@given(labels)
def test_label_rules_agree_with_the_writers(label: str) -> None:
    """A label is accepted, stored and refused exactly as the FAT32 and exFAT writers do."""
    assert _outcome(check_fat32_label, label) == _outcome(fat32.check_label, label)
    assert _outcome(check_exfat_label, label) == _outcome(exfat.check_label, label)


def test_the_config_checks_labels_by_the_chosen_filesystem() -> None:
    """job.label is checked at load by the rule of job.filesystem, or by both with auto."""
    assert sorted(LABEL_RULES) == ["exfat", "fat32"]
    assert config_from_dict({"job": {"filesystem": "exfat", "label": "é"}}).job.label == "é"
    for fs in ("fat32", "auto"):
        with pytest.raises(ConfigError, match=r"job\.label: volume label 'é'"):
            config_from_dict({"job": {"filesystem": fs, "label": "é"}})


@given(st.text(alphabet="aZ09._-/ é", max_size=66))
def test_profile_names_follow_one_rule(name: str) -> None:
    """job.profile accepts a name exactly when the payload store does (or "" for none)."""
    stored = re.fullmatch(MANIFEST_PROFILE_NAME_PATTERN, name) is not None
    assert (re.fullmatch(PROFILE_NAME_PATTERN, name) is not None) == stored
    assert (re.fullmatch(PROFILE_PATTERN, name) is not None) == (stored or name == "")
