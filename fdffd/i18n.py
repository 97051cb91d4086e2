"""The volunteer's language: English or Korean, with gettext.

The words a volunteer reads (the live view, ``fdffctl status``) and the operator messages seen
most often are marked with :func:`_` (translated where they are shown) or :func:`N_` (a table
of English phrases, translated when it is read).  The catalogs are ``fdffd/locale/<lang>/
LC_MESSAGES/fdffd.po``, compiled to ``fdffd.mo`` beside them by ``scripts/catalogs`` (Babel);
both are in the repository, so ``pip install .`` ships them, and a test checks that the
``.mo`` files are those of their ``.po`` files.

Which language, first match wins (:func:`choose`):

1. ``LANGUAGE`` (a colon-separated list, as gettext reads it): one command in another
   language, ``LANGUAGE=ko fdffctl status``;
2. ``station.language`` in the config (``"ko"`` or ``"en"``): the station's own language,
   whatever the locale of the terminal or unit that runs the view;
3. ``LC_ALL``, then ``LC_MESSAGES``, then ``LANG`` (the first one set): ``ko_KR.UTF-8`` is Korean;
4. English.

A language without a catalog (``fr``) is skipped; ``C`` and ``POSIX`` are English.  Records,
journal events and the daemon's log stay English: the views translate from stable codes.
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Mapping
from pathlib import Path

DOMAIN = "fdffd"
LOCALE_DIR = Path(__file__).with_name("locale")
LANGUAGES = ("en", "ko")
"""The languages with words for volunteers (English is the source language)."""

_translation: gettext.NullTranslations = gettext.NullTranslations()
_language = "en"


def _code(value: str) -> str | None:
    """The catalog a locale name asks for (``ko_KR.UTF-8`` -> ``ko``), else None."""
    code = value.strip().split(".", 1)[0].split("@", 1)[0].split("_", 1)[0].lower()
    if code in ("c", "posix"):
        return "en"
    return code if code in LANGUAGES else None


def choose(configured: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The language to speak (module docstring): ``en`` or ``ko``."""
    env = os.environ if environ is None else environ
    candidates = [part for part in env.get("LANGUAGE", "").split(":") if part]
    if configured:
        candidates.append(configured)
    locale = next((env[v] for v in ("LC_ALL", "LC_MESSAGES", "LANG") if env.get(v)), "")
    if locale:
        candidates.append(locale)
    for candidate in candidates:
        code = _code(candidate)
        if code is not None:
            return code
    return "en"


def use(language: str) -> None:
    """Speak ``language`` from now on (English when it has no compiled catalog)."""
    global _translation, _language
    if language == "en":
        _translation, _language = gettext.NullTranslations(), "en"
        return
    _translation = gettext.translation(
        DOMAIN, str(LOCALE_DIR), languages=[language], fallback=True
    )
    _language = language if isinstance(_translation, gettext.GNUTranslations) else "en"


def language() -> str:
    """The language spoken now."""
    return _language


def _(message: str) -> str:
    """``message`` in the language spoken now."""
    return _translation.gettext(message)


def N_(message: str) -> str:
    """Mark ``message`` for the catalogs without translating it (translated where it is read)."""
    return message
