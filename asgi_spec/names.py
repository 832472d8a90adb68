"""The channel- and group-name grammar, as pure functions.

Three kinds of channel name exist:

* normal: ``http.request`` -- any process may read it;
* single-reader: ``http.request.body?Xk3e9`` -- one reader, strictly ordered;
  ``new_channel("http.request.body?")`` makes a fresh one;
* process-specific: ``srv1!conn42`` -- the process owning ``srv1!`` reads every
  local part with one ``receive(["srv1!"])`` and gets the full name back.

Names use ASCII letters, digits, ``-``, ``_`` and ``.`` plus at most one ``?``
or ``!``, and are at most ``MAX_NAME_LENGTH`` characters long. Group names use
the same characters without ``?`` or ``!``.
"""

from __future__ import annotations

import re
import secrets
import string

from asgi_spec.exceptions import InvalidChannelName

MAX_NAME_LENGTH = 255

_BODY = r"[A-Za-z0-9\-_.]+"
_SEND_NAME = re.compile(rf"{_BODY}(?:[?!]{_BODY})?")
_RECEIVE_NAME = re.compile(rf"{_BODY}(?:\?{_BODY}|!)?")
_GROUP_NAME = re.compile(_BODY)
_ALLOWED = set(string.ascii_letters + string.digits + "-_.")
_RANDOM_ALPHABET = string.ascii_letters


def _why_invalid(name: object, kind: str) -> str:
    if not isinstance(name, str):
        return f"{kind} name must be a str, not {type(name).__name__}"
    if not name:
        return f"{kind} name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"{kind} name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
    bad = sorted({c for c in name if c not in _ALLOWED and c not in "?!"})
    if bad:
        return (
            f"{kind} name {name!r} contains {''.join(bad)!r}; "
            "allowed: ASCII letters, digits, -_."
        )
    return f"{kind} name {name!r} is malformed"


def validate_channel_name(name: object, *, receive: bool = False) -> str:
    """Return ``name`` if it may be sent to (or, with ``receive``, read from).

    Sending needs a complete name: a ``?`` or ``!`` must be followed by its
    local part. Receiving also accepts a process-specific prefix ``srv1!``.
    Raises ``InvalidChannelName`` saying what is wrong.
    """
    pattern = _RECEIVE_NAME if receive else _SEND_NAME
    if isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and pattern.fullmatch(name):
        return name
    if isinstance(name, str) and receive and _SEND_NAME.fullmatch(name) and "!" in name:
        prefix = non_local_name(name)
        raise InvalidChannelName(
            f"receive from the process-specific prefix {prefix!r}, not from {name!r}"
        )
    if isinstance(name, str) and not receive and name.endswith("!"):
        raise InvalidChannelName(
            f"channel name {name!r} is a process-specific prefix: send to 'prefix!local'"
        )
    if isinstance(name, str) and name.endswith("?"):
        raise InvalidChannelName(
            f"channel name {name!r} has no id after '?': use new_channel({name!r}) to make one"
        )
    if isinstance(name, str) and name.count("?") + name.count("!") > 1:
        raise InvalidChannelName(f"channel name {name!r} has more than one '?' or '!'")
    raise InvalidChannelName(_why_invalid(name, "channel"))


def validate_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise ``InvalidChannelName``."""
    if isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and _GROUP_NAME.fullmatch(name):
        return name
    if isinstance(name, str) and ("?" in name or "!" in name):
        raise InvalidChannelName(f"group name {name!r} may not contain '?' or '!'")
    raise InvalidChannelName(_why_invalid(name, "group"))


def is_process_specific(name: str) -> bool:
    """``True`` for ``prefix!local`` names and ``prefix!`` receive prefixes."""
    return "!" in name


def is_single_reader(name: str) -> bool:
    """``True`` for ``name?id`` channels."""
    return "?" in name


def non_local_name(name: str) -> str:
    """The part of ``name`` that capacity and receiving are keyed on.

    ``srv1!conn42`` becomes ``srv1!``; every other name is returned unchanged.
    """
    bang = name.find("!")
    return name if bang < 0 else name[: bang + 1]


def random_suffix(length: int = 12) -> str:
    """A random string of ASCII letters (12 letters: about 68 bits)."""
    return "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(length))


def new_channel_name(pattern: str) -> str:
    """A fresh single-reader name for ``pattern``, which must end in ``?``.

    ``!`` patterns are refused: the process that reads a ``prefix!`` makes its
    own local parts.
    """
    if not isinstance(pattern, str) or not pattern.endswith("?"):
        raise InvalidChannelName(
            f"new_channel pattern must end in '?', got {pattern!r}"
            + (" (process-specific local parts are made by their reader)" if
               isinstance(pattern, str) and pattern.endswith("!") else "")
        )
    name = pattern + random_suffix()
    return validate_channel_name(name)
