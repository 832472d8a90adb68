"""The Switchboard worker: routing, consumers and the ``runworker`` loop.

Framework-agnostic; it shares only ``asgi_spec`` with the interface server.
"""

from worker.channels import Channel, Group
from worker.exceptions import ConsumeLater, DenyConnection, RouteError
from worker.message import Message
from worker.routing import Router, include, route, route_class
from worker.worker import Worker

__all__ = [
    "Channel",
    "ConsumeLater",
    "DenyConnection",
    "Group",
    "Message",
    "RouteError",
    "Router",
    "Worker",
    "include",
    "route",
    "route_class",
]
