"""How ``switchboard status`` writes a number of seconds, in its tables and its problems."""

from __future__ import annotations


def duration(seconds: float, *, days: bool = True) -> str:
    """``0.4 s``, ``12 s``, ``5 min``, ``3.2 h``; from 48 h on ``2.0 d``, or with
    ``days=False`` still hours (``55.6 h``)."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800 or not days:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
