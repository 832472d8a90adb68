"""The in-memory layer runs the whole conformance suite."""

from asgi_spec.conformance import ChannelLayerConformance
from asgi_spec.layers.memory import MemoryChannelLayer


class TestMemoryLayer(ChannelLayerConformance):
    def create_layer(self, **options):
        return MemoryChannelLayer(**options)


def test_receive_names_a_bad_list_of_channels_every_time():
    """The checked queues of a list are remembered; a list holding something that is
    not a name (a list, which cannot be remembered; an int) is refused as such, and a
    good list gives its queues in order, duplicates once, again and again."""
    import pytest

    from asgi_spec.exceptions import InvalidChannelName

    layer = MemoryChannelLayer()
    for bad, says in (([["sb.a"]], "not list"), ([1], "not int"), ([], "at least one"),
                      (["sb.a", "bad name"], "contains ' '")):
        for _ in range(2):
            with pytest.raises(InvalidChannelName, match=says):
                layer.receive(bad)
    layer.send("sb.b", {"n": 1})
    for _ in range(2):
        assert layer._receive_queues(iter(["sb.a", "sb.b", "sb.a"])) == ["sb.a", "sb.b"]
    assert layer.receive(["sb.a", "sb.b"]) == ("sb.b", {"n": 1})
