"""The Redis channel layer: sharded, Sentinel, TLS, optional encryption.

``RedisChannelLayer`` lives in ``layer.py``, its receives in ``receiving.py``,
its I/O in ``sync_io.py`` and ``async_io.py`` (twins), its pools in
``connections.py``; ``scripts.py`` holds its Lua and key layout, ``ring.py`` the
consistent hashing, ``config.py`` the URL forms.
"""

from asgi_spec.layers.redis.layer import RedisChannelLayer

__all__ = ["RedisChannelLayer"]
