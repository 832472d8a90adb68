"""At-least-once delivery: which channels have it, and the receipts of deliveries.

How this works: the layer option ``at_least_once`` is a list of globs
(``fnmatch``, like ``channel_capacity`` keys) or compiled regexes. A *normal*
channel whose name matches one of them is at-least-once: a message received
from it with ``receive_with_receipt`` stays in the layer, invisible, until
``ack(receipt)`` removes it; if no ack comes within ``ack_timeout`` seconds
(by the layer's clock) it becomes receivable again, at the head of its
channel. Single-reader (``?``) and process-specific (``!``) channels are
always at-most-once, whatever the patterns say: they have one reader, which
cannot hand a message to another if it dies.

A receipt is a ``Receipt``: a ``str`` (``"<queue>@<key>"``, where the key is
the backend's id of this one delivery) that also carries ``deliveries``, the
number of times the message has been handed out, this time included. Every
delivery gets a new key, so the receipt of a delivery that timed out can no
longer acknowledge the message once it was handed out again.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from asgi_spec import names
from asgi_spec.exceptions import InvalidChannelName, LayerConfigError

#: The extension name of ``receive_with_receipt`` / ``ack``.
ACKS_EXTENSION = "acks"

_SEPARATOR = "@"


class Receipt(str):
    """The receipt of one delivery of an at-least-once message.

    It is a ``str`` (so it can be logged, stored or sent to another process
    as text and still be acknowledged) with two extras: ``token``, the plain
    ``str`` value, and ``deliveries``, how many times this message has been
    delivered, this delivery included (1 on the first delivery).
    """

    deliveries: int

    def __new__(cls, token: str, deliveries: int = 1) -> Receipt:
        receipt = super().__new__(cls, token)
        receipt.deliveries = int(deliveries)
        return receipt

    @property
    def token(self) -> str:
        """The receipt as a plain ``str`` (what ``ack`` needs)."""
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Receipt({self.token!r}, deliveries={self.deliveries})"

    def __reduce__(self) -> Any:
        return (Receipt, (self.token, self.deliveries))


def has_acks(layer: Any) -> bool:
    """``True`` if ``layer`` provides ``receive_with_receipt`` and ``ack``."""
    return ACKS_EXTENSION in getattr(layer, "extensions", ())


def wants_receipts(layer: Any, channels: Iterable[str]) -> bool:
    """Should a consumer of ``channels`` receive with receipts from ``layer``?

    Yes when the layer has the ``acks`` extension and makes at least one of
    the channels at-least-once (a layer without ``is_at_least_once`` is asked
    for receipts whatever the channels). Otherwise plain ``receive`` does.
    """
    if not has_acks(layer):
        return False
    check = getattr(layer, "is_at_least_once", None)
    return check is None or any(check(channel) for channel in channels)


def make_receipt(queue: str, key: str, deliveries: int) -> Receipt:
    """The receipt of delivery ``key`` (a backend id without ``@``) from ``queue``."""
    return Receipt(f"{queue}{_SEPARATOR}{key}", deliveries)


def split_receipt(receipt: str) -> tuple[str, str] | None:
    """``(queue, key)`` of a receipt, or ``None`` if no layer could have made it."""
    queue, sep, key = receipt.partition(_SEPARATOR)
    if not sep or not key or _SEPARATOR in key:
        return None
    try:
        names.validate_channel_name(queue)
    except InvalidChannelName:
        return None
    if names.is_single_reader(queue) or names.is_process_specific(queue):
        return None
    return queue, key


def _patterns(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):  # a comma-separated list, as a URL query gives it
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, re.Pattern):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, bytes | dict):
        return list(value)
    raise LayerConfigError(
        "layer option 'at_least_once' must be a list of globs or compiled regexes "
        f"(or one comma-separated str), got {value!r}"
    )


class AtLeastOnceRules:
    """Answers "is this channel at-least-once?" (cached per name)."""

    def __init__(self, patterns: Any) -> None:
        compiled: list[re.Pattern[str]] = []
        for pattern in _patterns(patterns):
            if isinstance(pattern, re.Pattern):
                compiled.append(pattern)
            elif isinstance(pattern, str) and pattern:
                compiled.append(re.compile(fnmatch.translate(pattern)))
            else:
                raise LayerConfigError(
                    "layer option 'at_least_once' takes non-empty glob strings or "
                    f"compiled regexes, got {pattern!r}"
                )
        self.rules = tuple(compiled)
        self.matches = lru_cache(maxsize=4096)(self._lookup)

    def _lookup(self, name: str) -> bool:
        if not self.rules or names.is_single_reader(name) or names.is_process_specific(name):
            return False
        return any(regex.fullmatch(name) for regex in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)
