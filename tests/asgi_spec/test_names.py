"""The channel-name grammar, as pure functions."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_spec.exceptions import InvalidChannelName
from asgi_spec.names import (
    MAX_NAME_LENGTH,
    is_process_specific,
    is_single_reader,
    new_channel_name,
    non_local_name,
    validate_channel_name,
    validate_group_name,
)

body = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=60)


@given(body)
def test_plain_names_are_valid_everywhere(name):
    """Any run of letters, digits, ``-_.`` is a valid channel and group name."""
    assert validate_channel_name(name) == name
    assert validate_channel_name(name, receive=True) == name
    assert validate_group_name(name) == name


@given(body, body, st.sampled_from("?!"))
def test_names_with_one_marker_are_valid_for_send(head, tail, marker):
    """``head?tail`` and ``head!tail`` may be sent to."""
    assert validate_channel_name(f"{head}{marker}{tail}") == f"{head}{marker}{tail}"


@given(body, st.text(min_size=1, max_size=5).filter(
    lambda s: any(c not in string.ascii_letters + string.digits + "-_.?!" for c in s)))
def test_other_characters_are_refused_and_named(name, junk):
    """A character outside the grammar is refused, and the error names it."""
    with pytest.raises(InvalidChannelName) as caught:
        validate_channel_name(name + junk)
    bad = next(c for c in junk if c not in string.ascii_letters + string.digits + "-_.?!")
    assert repr(bad)[1:-1] in str(caught.value)


def test_length_limit():
    """Names up to ``MAX_NAME_LENGTH`` (at least 100) pass; longer ones say the limit."""
    assert MAX_NAME_LENGTH >= 100
    validate_channel_name("a" * MAX_NAME_LENGTH)
    with pytest.raises(InvalidChannelName, match=str(MAX_NAME_LENGTH)):
        validate_channel_name("a" * (MAX_NAME_LENGTH + 1))


@pytest.mark.parametrize(
    ("name", "receive", "message"),
    [
        ("srv!", False, "prefix"),
        ("reply?", False, "new_channel"),
        ("a?b!c", False, "more than one"),
        ("srv!local", True, "'srv!'"),
        (b"bytes", False, "str"),
        ("", False, "empty"),
    ],
)
def test_errors_say_what_is_wrong(name, receive, message):
    """Each kind of mistake gets its own explanation."""
    with pytest.raises(InvalidChannelName, match=message):
        validate_channel_name(name, receive=receive)


def test_receive_accepts_process_prefix_only():
    """``srv!`` is valid for receive but not for send."""
    assert validate_channel_name("srv!", receive=True) == "srv!"
    with pytest.raises(InvalidChannelName):
        validate_channel_name("srv!")


@pytest.mark.parametrize(
    ("name", "local", "single", "queue"),
    [
        ("http.request", False, False, "http.request"),
        ("body?abc", False, True, "body?abc"),
        ("srv!conn", True, False, "srv!"),
        ("srv!", True, False, "srv!"),
    ],
)
def test_name_kinds(name, local, single, queue):
    """Kinds are told apart and process channels share their prefix's queue."""
    assert is_process_specific(name) is local
    assert is_single_reader(name) is single
    assert non_local_name(name) == queue


def test_new_channel_names():
    """``new_channel_name`` appends a random id of letters to a ``?`` pattern."""
    first, second = new_channel_name("x?"), new_channel_name("x?")
    assert first != second
    assert first.startswith("x?") and first[2:].isalpha() and len(first) == 14
    with pytest.raises(InvalidChannelName, match="their reader"):
        new_channel_name("x!")
