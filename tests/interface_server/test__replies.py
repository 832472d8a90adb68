"""Tests for ``interface_server._replies``: reply-channel routing."""

from __future__ import annotations

import pytest

from asgi_spec.exceptions import InvalidChannelName
from asgi_spec.names import non_local_name, validate_channel_name
from interface_server._replies import ReplyRouter, new_server_id


def test_channels_share_the_prefix_and_are_valid() -> None:
    """Every reply channel is ``<server-id>!<local>``, a valid sendable name."""
    router: ReplyRouter[str] = ReplyRouter("srv")
    channels = [router.add(f"conn{i}") for i in range(5)]
    assert len(set(channels)) == 5
    for channel in channels:
        validate_channel_name(channel)
        assert non_local_name(channel) == "srv!"
    assert router.prefix == "srv!"


def test_route_finds_target_until_discarded() -> None:
    """A channel routes to its target until discarded; then it is dropped and counted."""
    router: ReplyRouter[str] = ReplyRouter("srv")
    channel = router.add("conn")
    assert router.route(channel) == "conn"
    assert channel in router
    router.discard(channel)
    assert router.route(channel) is None
    assert router.dropped == 1
    assert len(router) == 0


@pytest.mark.parametrize("channel", ["srv!zzz", "other!1", "http.request", "srv"])
def test_unknown_channels_are_dropped(channel: str) -> None:
    """Replies for unknown local parts or other prefixes are dropped, never raised."""
    router: ReplyRouter[str] = ReplyRouter("srv")
    router.add("conn")
    assert router.route(channel) is None
    assert router.dropped == 1


def test_local_parts_are_never_reused() -> None:
    """A discarded channel's name is not handed out again in this process."""
    router: ReplyRouter[str] = ReplyRouter("srv")
    first = router.add("a")
    router.discard(first)
    assert router.add("b") != first


def test_server_ids_are_random_and_valid() -> None:
    """Each process gets its own prefix; it is a valid receive name with '!'."""
    ids = {new_server_id() for _ in range(20)}
    assert len(ids) == 20
    for server_id in ids:
        validate_channel_name(server_id + "!", receive=True)


def test_invalid_server_id_is_refused() -> None:
    """A server id that would make invalid channel names is refused up front."""
    with pytest.raises(InvalidChannelName):
        ReplyRouter("bad id")
