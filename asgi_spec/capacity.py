"""Per-channel capacity: a default plus ``{glob or regex: capacity}`` rules.

Rules are tried in the mapping's order and the first match wins, so a
specific pattern listed before a broad one takes precedence. A process-specific
queue (``srv!``) that no rule matches gets ``process_default``: it holds the
messages of every connection of one process, so it needs far more room than
one channel. Globs use
``fnmatch`` syntax (``http.request.body?*`` needs ``[?]`` to match a literal
``?``); compiled regexes are matched with ``fullmatch``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from asgi_spec.exceptions import LayerConfigError


def compile_rules(rules: Mapping[Any, int]) -> tuple[tuple[re.Pattern[str], int], ...]:
    """Turn ``{glob | re.Pattern: capacity}`` into ``(regex, capacity)`` pairs."""
    if not isinstance(rules, Mapping):
        raise LayerConfigError(
            f"channel_capacity must be a mapping of glob or regex to int, got {rules!r}"
        )
    compiled = []
    for pattern, capacity in rules.items():
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise LayerConfigError(
                f"channel_capacity[{pattern!r}] must be a positive integer, got {capacity!r}"
            )
        if isinstance(pattern, re.Pattern):
            compiled.append((pattern, capacity))
        elif isinstance(pattern, str) and pattern:
            compiled.append((re.compile(fnmatch.translate(pattern)), capacity))
        else:
            raise LayerConfigError(
                f"channel_capacity keys must be glob strings or compiled regexes, got {pattern!r}"
            )
    return tuple(compiled)


class CapacityRules:
    """Answers "how many messages may this channel hold?" (cached per name)."""

    def __init__(self, default: int, rules: Mapping[Any, int],
                 process_default: int | None = None) -> None:
        self.default = default
        self.process_default = process_default or default
        self.rules = compile_rules(rules)
        self.for_channel = lru_cache(maxsize=4096)(self._lookup)

    def _lookup(self, name: str) -> int:
        for regex, capacity in self.rules:
            if regex.fullmatch(name):
                return capacity
        return self.process_default if name.endswith("!") else self.default
