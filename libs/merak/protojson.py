"""Messages as JSON for people and scripts: protojson, but 64-bit integers stay numbers.

Protobuf's JSON mapping writes int64/uint64 as strings (JavaScript's numbers are exact to 2^53 only);
our reports count VMs and ping pairs in 64 bits and are read as numbers, e.g. `jq '.test.passed'`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_WIDE = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _numbers(value: Any, field: FieldDescriptor) -> Any:
    if field.type in _WIDE:
        return int(value)
    if field.message_type is not None and isinstance(value, dict):
        return _restore(value, field.message_type)
    return value


def _restore(data: dict[str, Any], descriptor: Any) -> dict[str, Any]:  # a Descriptor (python or upb)
    for field in descriptor.fields:
        key = field.name if field.name in data else field.json_name
        if key not in data:
            continue
        value = data[key]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            data[key] = {k: _numbers(v, value_field) for k, v in value.items()}
        elif isinstance(value, list):
            data[key] = [_numbers(v, field) for v in value]
        else:
            data[key] = _numbers(value, field)
    return data


def to_dict(message: Message) -> dict[str, Any]:
    """The message as protojson with proto field names, 64-bit integers as JSON numbers."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return _restore(data, message.DESCRIPTOR)
