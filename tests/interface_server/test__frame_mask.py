"""``SmallMasker`` against Autobahn's own masker: the same bytes, however split."""

from __future__ import annotations

import autobahn.websocket.protocol as autobahn_protocol
from autobahn.websocket.xormasker import create_xor_masker as autobahn_masker
from hypothesis import given
from hypothesis import strategies as st

from interface_server import _frame_mask


@given(key=st.binary(min_size=4, max_size=4), payload=st.binary(max_size=300),
       cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=4))
def test_small_masker_matches_autobahn(key: bytes, payload: bytes, cuts: list[int]) -> None:
    ours = _frame_mask.SmallMasker(key)
    theirs = autobahn_masker(key, len(payload))
    pieces, start = [], 0
    for cut in [*sorted(min(c, len(payload)) for c in cuts), len(payload)]:
        pieces.append(payload[start:cut])
        start = cut
    got = b"".join(ours.process(piece) for piece in pieces)
    assert got == theirs.process(payload)
    assert ours.pointer() == len(payload)
    ours.reset()
    assert ours.pointer() == 0
    assert ours.process(payload) == got


def test_installed_for_small_frames_only() -> None:
    _frame_mask.install()
    _frame_mask.install()  # twice is once
    small = autobahn_protocol.create_xor_masker(b"abcd", 32)
    large = autobahn_protocol.create_xor_masker(b"abcd", _frame_mask.SMALL)
    assert isinstance(small, _frame_mask.SmallMasker)
    assert not isinstance(large, _frame_mask.SmallMasker)
