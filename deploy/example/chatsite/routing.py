"""Channel routing of the chat project (``CHANNEL_LAYERS["default"]["ROUTING"]``).

Routes are tried in order; the first match wins. ``http.request`` messages
that no route takes -- the pages, static files, posting a message -- go on
to Django's views (``chatsite.urls``): ``manage.py runworker`` adds that
fallback itself.
"""

from chat import consumers

from worker.routing import route

ROOM = r"(?P<room>[-a-zA-Z0-9_]{1,50})"

channel_routing = [
    consumers.RoomSocket.as_route(path=rf"^/ws/rooms/{ROOM}/$"),
    consumers.LongPoll.as_route(path=rf"^/rooms/{ROOM}/poll/$"),
    consumers.EventStream.as_route(path=rf"^/rooms/{ROOM}/events/$"),
    route(consumers.POLL_TIMEOUT_CHANNEL, consumers.poll_timeout),
    # Anything else: refuse WebSockets, ignore the ends of requests we never held.
    route("websocket.connect", consumers.reject),
    route(["websocket.receive", "websocket.disconnect", "http.disconnect"], consumers.ignore),
]
