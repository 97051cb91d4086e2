"""fdffd: turns donated USB drives into clean, verified carriers of curated content."""

from datetime import date

__version__ = "0.1.0"

#: The day this version was released.  A station whose clock says an earlier day has a wrong
#: clock (a board without a real-time clock starts in 1970 or 2000): it refuses jobs rather
#: than date drives from a wrong window.  Set it anew with every release.
RELEASE_DATE = date(2026, 12, 1)
