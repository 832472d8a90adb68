"""Benchmarks: the channel-layer benchmark (``layer.py``) and the benchmark's plain
(non-Django) consumers (``app.py``, importable as ``tests.bench.app:channel_routing``)."""
