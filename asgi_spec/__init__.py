"""The Switchboard contract: the channel-layer API, its backends and message formats.

This package is what the interface server and the workers share, and all they
share. It imports neither Twisted nor Django, so a third-party server or worker
speaking the same contract interoperates.
"""

from asgi_spec.acks import Receipt
from asgi_spec.base import STATISTICS_KEYS, BaseChannelLayer
from asgi_spec.exceptions import (
    ChannelFull,
    ChannelLayerError,
    InvalidChannelName,
    InvalidMessage,
    LayerConfigError,
    LayerUnavailable,
    MessageFormatError,
    MessageTooLarge,
)
from asgi_spec.urls import DEFAULT_LAYER_URL, layer_from_url, load_layer

__all__ = [
    "DEFAULT_LAYER_URL",
    "STATISTICS_KEYS",
    "BaseChannelLayer",
    "ChannelFull",
    "ChannelLayerError",
    "InvalidChannelName",
    "InvalidMessage",
    "LayerConfigError",
    "LayerUnavailable",
    "MessageFormatError",
    "MessageTooLarge",
    "Receipt",
    "layer_from_url",
    "load_layer",
]
