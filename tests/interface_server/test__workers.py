"""Tests for ``interface_server._workers``: the cached live-worker view."""

from __future__ import annotations

import pytest

from interface_server._workers import WorkerView


def test_unknown_until_loaded() -> None:
    """Before the first registry answer, nobody knows (None) and a refresh is due."""
    view = WorkerView()
    assert view.consumes("http.request") is None
    assert view.is_stale(0.0)


@pytest.mark.parametrize(("channels", "channel", "consumes"), [
    (["http.request"], "http.request", True),
    (["websocket.*"], "websocket.connect", True),
    (["websocket.*"], "http.request", False),
    (["http.*", "chat"], "http.request", True),
    ([], "http.request", False),
])
def test_globs(channels: list[str], channel: str, consumes: bool) -> None:
    """A worker consumes the channels its globs match."""
    view = WorkerView()
    view.update(0.0, {"w1": {"channels": channels}})
    assert view.consumes(channel) is consumes


def test_no_workers_means_no() -> None:
    """An empty registry answer is a definite no."""
    view = WorkerView()
    view.update(0.0, {})
    assert view.consumes("http.request") is False
    assert view.worker_count == 0


def test_worker_without_channel_info_consumes_everything() -> None:
    """A worker that does not list its channels is assumed to consume all."""
    view = WorkerView()
    view.update(0.0, {"w1": {"pid": 4}})
    assert view.consumes("anything") is True


def test_refresh_rate_limit() -> None:
    """A refresh is allowed again only refresh_interval after the last one."""
    view = WorkerView(refresh_interval=1.0)
    view.update(10.0, {})
    assert not view.is_stale(10.9)
    assert view.is_stale(11.0)


def test_failed_refresh_is_unknown_again() -> None:
    """After a failed registry read the answer is unknown, not a stale yes or no."""
    view = WorkerView()
    view.update(0.0, {"w1": {"channels": ["http.request"]}})
    view.failed(5.0)
    assert view.consumes("http.request") is None
    assert view.worker_count is None
    assert not view.is_stale(5.5)


def test_update_replaces_the_answer() -> None:
    """A newer answer replaces the old one (cached matches included)."""
    view = WorkerView()
    view.update(0.0, {"w1": {"channels": ["http.request"]}})
    assert view.consumes("http.request") is True
    view.update(2.0, {})
    assert view.consumes("http.request") is False


def test_nobody_after_a_registry_failure_is_unknown_for_the_grace_period() -> None:
    """A registry that comes back from an outage empty (Redis restarted) is not taken as
    "no worker" until the workers had a heartbeat period to re-register."""
    view = WorkerView(recovery_grace=7.0)
    view.update(0.0, {"w1": {"channels": ["http.request"]}})
    view.failed(10.0)
    view.update(11.0, {})
    assert view.consumes("http.request") is None
    view.update(16.9, {"w1": {"channels": ["http.request"]}})
    assert view.consumes("http.request") is True
    assert view.consumes("websocket.connect") is None
    view.update(17.0, {})
    assert view.consumes("http.request") is False


def test_a_failed_heartbeat_also_raises_doubt() -> None:
    """Any failed registry call (the server's own heartbeat too) opens the grace period."""
    view = WorkerView(recovery_grace=7.0)
    view.doubt(3.0)
    view.update(4.0, {})
    assert view.consumes("http.request") is None
    view.update(10.0, {})
    assert view.consumes("http.request") is False


def test_a_failure_after_loading_makes_the_loaded_answer_doubtful() -> None:
    """An empty answer loaded just before the layer failed is doubted as well."""
    view = WorkerView(recovery_grace=7.0)
    view.update(4.0, {})
    view.doubt(4.5)
    assert view.consumes("http.request") is None
