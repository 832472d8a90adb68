"""The test project's channel routing. ``http.request`` is not routed: the
Django views serve it through the default route."""

from tests.django.project import consumers
from worker.routing import route

channel_routing = [
    route("websocket.connect", consumers.accept, path=r"^/ws/echo/$"),
    route("websocket.receive", consumers.echo, path=r"^/ws/echo/$"),
    route("websocket.connect", consumers.counter_connect, path=r"^/ws/counter/$"),
    route("websocket.receive", consumers.counter_receive, path=r"^/ws/counter/$"),
    route("websocket.disconnect", consumers.counter_disconnect, path=r"^/ws/counter/$"),
    route("websocket.connect", consumers.quiet_connect, path=r"^/ws/quiet/$"),
    route("websocket.connect", consumers.http_session_connect, path=r"^/ws/http-session/$"),
    route("websocket.connect", consumers.whoami_connect, path=r"^/ws/whoami/$"),
    route("websocket.connect", consumers.auth_connect, path=r"^/ws/auth/$"),
    route("websocket.receive", consumers.auth_receive, path=r"^/ws/auth/$"),
    route("websocket.connect", consumers.origin_connect, path=r"^/ws/origin/$"),
    route("websocket.connect", consumers.ordered_connect, path=r"^/ws/ordered/$"),
    route("websocket.receive", consumers.ordered_receive, path=r"^/ws/ordered/$"),
    route("websocket.disconnect", consumers.ordered_disconnect, path=r"^/ws/ordered/$"),
    consumers.OrderedClassConsumer.as_route(path=r"^/ws/ordered-class/$"),
    consumers.RoomConsumer.as_route(path=r"^/ws/room/(?P<room>\w+)/$"),
    consumers.WhoConsumer.as_route(path=r"^/ws/who/$"),
    consumers.DecoratedClassConsumer.as_route(path=r"^/ws/decorated/$"),
    consumers.ChatConsumer.as_route(path=r"^/ws/chat/(?P<room>\w+)/$"),
    consumers.NotesDemultiplexer.as_route(path=r"^/ws/notes/$"),
]
