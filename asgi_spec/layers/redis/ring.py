"""Consistent hashing of queue and group names onto Redis servers (pure, no I/O).

Each server name is hashed to ``replicas`` points on a 64-bit ring; a key
belongs to the first point at or after its own hash, wrapping around. The
hash is BLAKE2b (not Python's salted ``hash``), so every process, on every
machine, places every key on the same server. Adding a server moves only the
keys that now fall on its points -- about ``1/(n+1)`` of them -- and those
keys all move to the new server.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from functools import lru_cache

DEFAULT_REPLICAS = 160


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Maps a key to the index of its node in ``nodes``."""

    def __init__(self, nodes: Sequence[str], replicas: int = DEFAULT_REPLICAS) -> None:
        if not nodes:
            raise ValueError("a hash ring needs at least one node")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"hash ring nodes must be distinct, got {list(nodes)}")
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        self.nodes = tuple(nodes)
        points = sorted(
            (_hash(f"{node}#{replica}"), index)
            for index, node in enumerate(self.nodes)
            for replica in range(replicas)
        )
        self._hashes = [point for point, _ in points]
        self._owners = [index for _, index in points]
        self.index_of = lru_cache(maxsize=8192)(self._index_of)

    def _index_of(self, key: str) -> int:
        if len(self.nodes) == 1:
            return 0
        position = bisect.bisect_left(self._hashes, _hash(key))
        if position == len(self._hashes):
            position = 0
        return self._owners[position]

    def node_for(self, key: str) -> str:
        """The name of the node that holds ``key``."""
        return self.nodes[self.index_of(key)]

    def __len__(self) -> int:
        return len(self.nodes)
