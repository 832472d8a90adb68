"""The in-memory layer runs the whole conformance suite."""

from asgi_spec.conformance import ChannelLayerConformance
from asgi_spec.layers.memory import MemoryChannelLayer


class TestMemoryLayer(ChannelLayerConformance):
    def create_layer(self, **options):
        return MemoryChannelLayer(**options)
