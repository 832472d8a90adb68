"""The Switchboard interface server: HTTP/1.1 and WebSocket in, channel messages out.

``interfaceserver`` (``interface_server.cli``) terminates HTTP (twisted.web)
and WebSocket (Autobahn), turns every request and frame into a message on the
channel layer (``http.request``, ``websocket.connect`` ...), and writes what
the workers send back on each connection's reply channel. It never imports the
worker: the contract between them is ``asgi_spec``.

Layout: the underscored modules are sans-I/O (pure functions, no sockets, no
reactor); ``http_channel``, ``http_request`` and ``ws_protocol`` are thin
Twisted/Autobahn adapters over them; ``layer_io`` is the only door to the
layer; ``server`` ties it all together; ``cli`` is the command.
"""

from interface_server.config import ServerConfig

__all__ = ["ServerConfig"]
