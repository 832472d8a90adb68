"""Message values and their msgpack encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_spec.codec import check_message, decode, encode
from asgi_spec.exceptions import InvalidMessage, MessageTooLarge

scalars = (
    st.binary(max_size=20)
    | st.text(max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
messages = st.dictionaries(st.text(max_size=10), values, max_size=6)


@given(messages)
def test_round_trip_preserves_values_and_types(message):
    """Every valid message decodes to an equal message with the same types."""
    decoded = decode(encode(message))
    assert decoded == message

    def types(value):
        if isinstance(value, dict):
            return {k: types(v) for k, v in value.items()}
        if isinstance(value, list):
            return [types(v) for v in value]
        return type(value)

    assert types(decoded) == types(message)


@pytest.mark.parametrize(
    ("message", "where"),
    [
        ({"a": {"b": [1, {2: "x"}]}}, "message['a']['b'][1]"),
        ({"s": {1}}, "message['s']"),
        ({"i": -(2**63) - 1}, "message['i']"),
        ({"d": bytearray(b"x")}, "message['d']"),
    ],
)
def test_check_names_the_path(message, where):
    """The error for a bad value gives its path inside the message."""
    with pytest.raises(InvalidMessage) as caught:
        check_message(message)
    assert where in str(caught.value)


def test_size_limit_is_on_the_encoding():
    """``MessageTooLarge`` compares the encoded size against the limit and says both."""
    data = encode({"b": b"x" * 90}, max_size=100)
    assert len(data) <= 100
    with pytest.raises(MessageTooLarge, match="100"):
        encode({"b": b"x" * 100}, max_size=100)


_ANY_VALUE = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=5),
        st.binary(max_size=5), st.integers(min_value=-(2**64), max_value=2**64),
        st.sets(st.integers(), max_size=2), st.builds(bytearray, st.binary(max_size=3)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(), st.binary(max_size=2)),
                        inner, max_size=3),
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=3), _ANY_VALUE, max_size=4))
def test_the_fast_check_and_the_naming_check_agree(message):
    """``check_message`` takes a fast path for valid messages; whatever it accepts,
    the path-naming walk accepts too, and whatever it refuses is named."""
    from asgi_spec import codec

    try:
        codec._check(message, "message")
        valid = True
    except InvalidMessage:
        valid = False
    assert codec._valid(message) is valid
    if valid:
        check_message(message)
    else:
        with pytest.raises(InvalidMessage, match=r"^message"):
            check_message(message)


def test_the_reused_packer_encodes_as_packb_after_a_refusal_and_across_threads():
    """Encoding reuses one msgpack Packer per thread: after a value it refused (an
    int past 64 bits, at the wire's edge), the next encoding is msgpack.packb's own,
    and threads encoding at once each get their own bytes."""
    import threading

    import msgpack

    from asgi_spec.codec import _packb, pack

    with pytest.raises(OverflowError):
        _packb({"n": [1, 2**70]})
    message = {"text": "é" * 40, "bytes": b"\x00" * 300, "n": [1, 2.5, None]}
    assert encode(message) == msgpack.packb(message, use_bin_type=True)
    assert pack("srv!x") == msgpack.packb("srv!x", use_bin_type=True)
    wrong: list[int] = []

    def encode_many(n: int) -> None:
        for i in range(2000):
            value = {"t": n, "i": i, "pad": b"x" * (n * 7 + i % 13)}
            if decode(encode(value)) != value:
                wrong.append(n)

    threads = [threading.Thread(target=encode_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
