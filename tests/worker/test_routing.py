"""Tests for ``worker.routing``: filters, includes, routing forms and route errors."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from worker.exceptions import RouteError
from worker.routing import Router, include, route, route_class


def index(message, **kwargs):
    """A consumer used by the routing tests."""


def room(message, **kwargs):
    """Another consumer used by the routing tests."""


def fallback(message, **kwargs):
    """A third consumer used by the routing tests."""


#: Imported by path in the tests below.
inner_routing = [route("http.request", room, path=r"^/(?P<name>\w+)/$")]
dict_routing = {"http.request": index, "websocket.connect": room}
not_a_routing = 42


def msg(channel, **content):
    return SimpleNamespace(channel=SimpleNamespace(name=channel), content=content)


def test_filter_named_groups_become_kwargs():
    """A filter regex's named groups are passed as consumer keyword arguments."""
    router = Router([route("websocket.receive", room, path=r"^/chat/(?P<room>\w+)/$")])
    assert router.match(msg("websocket.receive", path="/chat/lobby/")) == (room, {"room": "lobby"})


def test_filters_use_re_match_anchored_at_start_only():
    """Filters are applied with re.match: anchored at the start, not the end."""
    router = Router([route("http.request", index, path=r"/a")])
    assert router.match(msg("http.request", path="/abc")) == (index, {})
    assert router.match(msg("http.request", path="/x/a")) is None


def test_all_filters_must_match():
    """A route with several filters matches only when every filter matches."""
    router = Router([route("http.request", index, path=r"^/$", method=r"^GET$")])
    assert router.match(msg("http.request", path="/", method="GET")) is not None
    assert router.match(msg("http.request", path="/", method="POST")) is None


def test_missing_or_non_text_key_does_not_match():
    """A filtered key that is absent or neither str nor bytes never matches."""
    router = Router([route("custom", index, path=r".*")])
    assert router.match(msg("custom")) is None
    assert router.match(msg("custom", path=3)) is None


def test_bytes_value_is_matched_as_latin1_text():
    """A bytes key (query_string) is matched as latin-1 text."""
    router = Router([route("http.request", index, query_string=r"^a=(?P<a>\d+)")])
    assert router.match(msg("http.request", query_string=b"a=12&b=3")) == (index, {"a": "12"})


def test_first_matching_route_wins_and_other_channels_are_ignored():
    """Routes are tried in order; a route for another channel never matches."""
    router = Router([
        route("websocket.connect", room),
        route("http.request", index, path=r"^/$"),
        route("http.request", fallback),
    ])
    assert router.match(msg("http.request", path="/")) == (index, {})
    assert router.match(msg("http.request", path="/other")) == (fallback, {})
    assert router.match(msg("websocket.receive", path="/")) is None


def test_optional_group_that_matched_nothing_is_left_out():
    """A named group that took no part in the match is not passed as a kwarg."""
    router = Router([route("http.request", index, path=r"^/(?:(?P<page>\d+)/)?$")])
    assert router.match(msg("http.request", path="/")) == (index, {})
    assert router.match(msg("http.request", path="/4/")) == (index, {"page": "4"})


def test_include_strips_prefix_before_inner_match_and_merges_kwargs():
    """include() strips the matched prefix; outer and inner kwargs merge, inner winning."""
    inner = [route("http.request", room, path=r"^/(?P<name>\w+)/(?P<version>\d)/$")]
    router = Router([include(inner, path=r"^/api/v(?P<version>\d)(?P<zone>[a-z])")])
    found = router.match(msg("http.request", path="/api/v1x/users/2/"))
    assert found == (room, {"version": "2", "zone": "x", "name": "users"})
    assert router.match(msg("http.request", path="/users/2/")) is None


def test_include_does_not_change_the_message():
    """The consumer still sees the full, unstripped path."""
    router = Router([include(inner_routing, path=r"^/api")])
    message = msg("http.request", path="/api/x/")
    assert router.match(message) == (room, {"name": "x"})
    assert message.content["path"] == "/api/x/"


def test_nested_includes_strip_each_level():
    """Includes nest: each level strips its own prefix."""
    router = Router([include([include(inner_routing, path=r"^/b")], path=r"^/a")])
    assert router.match(msg("http.request", path="/a/b/c/")) == (room, {"name": "c"})


def test_include_by_import_path_both_forms():
    """include() accepts 'module:attr' and dotted 'module.attr' paths."""
    for path in ("tests.worker.test_routing:inner_routing",
                 "tests.worker.test_routing.inner_routing"):
        router = Router([include(path, path=r"^/p")])
        assert router.match(msg("http.request", path="/p/q/")) == (room, {"name": "q"})


def test_router_channels_lists_every_routed_channel():
    """Router.channels is every channel name the routing covers, includes too."""
    router = Router([route("a.b", index), include([route(["c", "d"], room)], path="x")])
    assert router.channels == {"a.b", "c", "d"}


def test_dict_routing_and_import_path_routing():
    """A {channel: consumer} dict and an import path to one are valid routings."""
    for routing in (dict_routing, "tests.worker.test_routing:dict_routing"):
        router = Router(routing)
        assert router.channels == {"http.request", "websocket.connect"}
        assert router.match(msg("websocket.connect")) == (room, {})


def test_consumer_by_import_path():
    """A consumer may be given as an import path."""
    found = Router([route("x", "tests.worker.test_routing:index")]).match(msg("x"))
    assert found == (index, {})


def test_precompiled_filter_is_accepted():
    """A compiled regex works as a filter."""
    router = Router([route("x", index, path=re.compile(r"^/(?P<a>.)"))])
    assert router.match(msg("x", path="/z")) == (index, {"a": "z"})


def test_route_class_uses_channel_names():
    """route_class routes the class on every channel its channel_names() lists."""

    class Consumer:
        @classmethod
        def channel_names(cls):
            return {"websocket.connect", "websocket.receive"}

    router = Router([route_class(Consumer, path=r"^/ws/$")])
    assert router.channels == {"websocket.connect", "websocket.receive"}
    assert router.match(msg("websocket.receive", path="/ws/")) == (Consumer, {})


@pytest.mark.parametrize(("make", "words"), [
    (lambda: route("x", index, path=r"^/(\d+)/$"), "unnamed group"),
    (lambda: route("x", index, path=r"^/(?P<a>\d+)/(\w)$"), "unnamed group"),
    (lambda: route("x", index, path=r"^/[$"), "not a valid regex"),
    (lambda: route("x", index, path=3), "must be a regex str"),
    (lambda: route("x", 42), "consumer must be callable"),
    (lambda: route("x", "tests.worker.test_routing:nothing_here"), "has no attribute"),
    (lambda: route("x", "no_such_module_zz:f"), "cannot import module"),
    (lambda: route("bad name!", index), "invalid channel name"),
    (lambda: route("http.request?", index), "invalid channel name"),
    (lambda: route([], index), "no channel names"),
    (lambda: route_class(index), "channel_names"),
    (lambda: include("tests.worker.test_routing:not_a_routing"), "routing must be a list"),
    (lambda: Router([index]), "entry 0 is function"),
    (lambda: Router("no_such_module_zz.routing"), "cannot import module"),
])
def test_bad_routes_raise_clear_errors(make, words):
    """Each kind of bad route raises RouteError saying what is wrong."""
    with pytest.raises(RouteError, match=re.escape(words)):
        make()
