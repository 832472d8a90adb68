"""The Redis channel layer: sharded, Sentinel, TLS, optional encryption.

``RedisChannelLayer`` lives in ``layer.py``; ``scripts.py`` holds its Lua and
key layout, ``ring.py`` the consistent hashing, ``config.py`` the URL forms.
"""

from asgi_spec.layers.redis.layer import RedisChannelLayer

__all__ = ["RedisChannelLayer"]
