"""Configs cross the C ABI as serialized protos or textproto; this turns what users pass into those."""

from __future__ import annotations

from typing import Any, Dict, Type, TypeVar, Union

from google.protobuf import message as _message

from attnkit import _attnkit
from attnkit._types import ConfigLike

_M = TypeVar("_M", bound=_message.Message)

# Message full name -> the C ABI's attnkit_config_kind.
KINDS = {
    "attnkit.v1.EvictionConfig": _attnkit.CONFIG_EVICTION,
    "attnkit.v1.SparseAttentionConfig": _attnkit.CONFIG_SPARSE_ATTENTION,
    "attnkit.v1.VisualPruningConfig": _attnkit.CONFIG_VISUAL_PRUNING,
    "attnkit.v1.SessionConfig": _attnkit.CONFIG_SESSION,
}


def _message_class(message_name: str) -> Type[_message.Message]:
    from attnkit import attnkit_pb2  # the package's module of every config message

    return getattr(attnkit_pb2, message_name.rsplit(".", 1)[1])


def from_dict(config: Dict[str, Any], message_name: str) -> _message.Message:
    """A dict (as JSON gives: the proto3 JSON mapping, field names in either spelling, enums by
    name) as a ``message_name`` message. Unknown fields or wrong value types raise
    ``attnkit.InvalidArgument`` naming the field."""
    from google.protobuf import json_format

    from attnkit.errors import InvalidArgument

    try:
        return json_format.ParseDict(config, _message_class(message_name)())
    except json_format.ParseError as e:
        raise InvalidArgument(f"config: not a valid {message_name} dict: {e}") from None


def to_wire(config: ConfigLike, message_name: str) -> Union[bytes, bytearray, memoryview, str]:
    """``config`` as the C ABI takes it: bytes (a message of type ``message_name``, a dict in the
    proto3 JSON mapping, or serialized bytes) or str (textproto). Anything else, or a message of
    another type, is a TypeError."""
    if isinstance(config, dict):
        config = from_dict(config, message_name)
    if isinstance(config, _message.Message):
        name = config.DESCRIPTOR.full_name
        if name != message_name:
            raise TypeError(f"config: expected {message_name}, got {name}")
        return config.SerializeToString()
    if isinstance(config, (bytes, bytearray, memoryview, str)):
        return config
    raise TypeError(f"config: expected {message_name}, a dict, bytes or a textproto str, "
                    f"got {type(config).__name__}")


def _kind_of(message_class: Type[_message.Message]) -> int:
    return KINDS[message_class.DESCRIPTOR.full_name]


def validate(config: ConfigLike, message_class: Type[_message.Message]) -> None:
    """Raises attnkit.InvalidArgument (naming the field) when ``config`` is not a valid
    ``message_class``; the library's one validation, shared with every language."""
    name = message_class.DESCRIPTOR.full_name
    _attnkit.config_validate(KINDS[name], to_wire(config, name))


def parse(config: ConfigLike, message_class: Type[_M]) -> _M:
    """``config`` (message, dict, bytes or textproto) as a ``message_class`` instance, parsed by the
    library (so textproto is read exactly as the C ABI reads it). Not validated."""
    name = message_class.DESCRIPTOR.full_name
    wire = to_wire(config, name)
    if isinstance(wire, str):
        wire = _attnkit.config_text_to_binary(KINDS[name], wire)
    result = message_class()
    result.ParseFromString(bytes(wire))
    return result


def to_text(config: ConfigLike, message_class: Type[_message.Message]) -> str:
    """``config`` as textproto, printed by the library."""
    name = message_class.DESCRIPTOR.full_name
    wire = to_wire(config, name)
    if isinstance(wire, str):
        wire = _attnkit.config_text_to_binary(KINDS[name], wire)
    return _attnkit.config_binary_to_text(KINDS[name], bytes(wire))
