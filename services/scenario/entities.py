"""Create, read, list, update and delete of configs and scenarios (ids, timestamps, paging, update masks)."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from typing import Any, cast

from google.protobuf.descriptor import FieldDescriptor

from merak.errors import FailedPrecondition, InvalidArgument, NotFound
from merak.ids import check_id
from merak.v1 import scenario_pb2
from services.scenario import states, validate
from services.scenario.models import (
    IMMUTABLE_FIELDS,
    REFERENCE_FIELDS,
    SCENARIO,
    STATUS_FIELDS,
    Kind,
    M,
    now,
    references,
)
from services.scenario.store import ScenarioStore

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def encode_page_token(kind: Kind[Any], last_id: str) -> str:
    """An opaque token: the kind and the last id listed."""
    return base64.urlsafe_b64encode(f"{kind.name}:{last_id}".encode()).decode().rstrip("=")


def decode_page_token(kind: Kind[Any], token: str) -> str:
    """The last id listed by the previous page; INVALID_ARGUMENT for a token not made by encode_page_token."""
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    name, _, last_id = text.partition(":")
    if name != kind.name or not last_id:
        raise InvalidArgument("page_token", "not a token from a previous reply of this list")
    return last_id


def _has_value(entity: Any, field: FieldDescriptor) -> bool:
    if field.is_repeated:
        return len(getattr(entity, field.name)) > 0
    if field.message_type is not None:
        return bool(entity.HasField(field.name))
    return bool(getattr(entity, field.name))


def _replace_field(target: Any, source: Any, field: FieldDescriptor) -> None:
    target.ClearField(field.name)
    if field.is_repeated:
        getattr(target, field.name).extend(getattr(source, field.name))
    elif field.message_type is not None:
        if source.HasField(field.name):
            getattr(target, field.name).CopyFrom(getattr(source, field.name))
    else:
        setattr(target, field.name, getattr(source, field.name))


def merge(stored: M, given: M, paths: Sequence[str]) -> M:
    """`stored` with the fields of `given` named by `paths`, or with every non-empty one when none are.

    Ids and timestamps never change; statuses are set by actions only (naming one is an error, and an
    empty mask leaves them alone, so a Get → edit → Update round trip works).
    """
    fields: dict[str, FieldDescriptor] = {f.name: cast(FieldDescriptor, f) for f in stored.DESCRIPTOR.fields}
    if paths:
        chosen: list[FieldDescriptor] = []
        for i, path in enumerate(paths):
            where = f"update_mask.paths[{i}]"
            if "." in path:
                raise InvalidArgument(
                    where, f"{path!r}: name a top-level field; nested paths are not supported"
                )
            if path not in fields:
                raise InvalidArgument(where, f"{path!r} is not a field of {stored.DESCRIPTOR.name}")
            if path in IMMUTABLE_FIELDS:
                raise InvalidArgument(where, f"{path!r} cannot change")
            if path in STATUS_FIELDS:
                raise InvalidArgument(where, f"{path!r} is set by ScenarioAction, not by Update")
            chosen.append(fields[path])
    else:
        chosen = [
            f
            for f in fields.values()
            if f.name not in IMMUTABLE_FIELDS and f.name not in STATUS_FIELDS and _has_value(given, f)
        ]
    for field in chosen:
        _replace_field(stored, given, field)
    return stored


class EntityManager:
    """CRUD of the six entity kinds over the store; what an entity may refer to is checked here."""

    def __init__(self, store: ScenarioStore) -> None:
        self.store = store

    async def create(self, kind: Kind[M], entity: M, *, check: bool = True) -> M:
        """Store a new entity: id generated (uuid4 hex) or checked, statuses NONE, timestamps now.

        `check` False stores a config as given (Merak's REST API did; DEPLOY checks it then); a
        scenario's references are checked either way.
        """
        result = kind.copy(entity)
        # Every kind has an id and timestamps; Message does not say so.
        fields: Any = result
        if fields.id:
            check_id("id", fields.id)
        else:
            fields.id = uuid.uuid4().hex
        for name in STATUS_FIELDS & set(result.DESCRIPTOR.fields_by_name):
            result.ClearField(name)
        stamp = now()
        fields.created_at.CopyFrom(stamp)
        fields.updated_at.CopyFrom(stamp)
        if check or kind is SCENARIO:
            validate.validate(kind, result)
        refs = references(result) if isinstance(result, scenario_pb2.Scenario) else []
        await self.store.create(kind, result, refs)
        return result

    async def get(self, kind: Kind[M], entity_id: str) -> M:
        """The entity; NOT_FOUND when missing."""
        if not entity_id:
            raise InvalidArgument("id", "required")
        entity = await self.store.get(kind, entity_id)
        if entity is None:
            raise NotFound(f"{kind.label} {entity_id!r} does not exist")
        return entity

    async def list(self, kind: Kind[M], page_size: int, page_token: str) -> tuple[list[M], str]:
        """One page in id order, and the token of the next page ("" at the end)."""
        if page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"at most {MAX_PAGE_SIZE}, got {page_size}")
        after = decode_page_token(kind, page_token)
        items, last = await self.store.page(kind, after, page_size or DEFAULT_PAGE_SIZE)
        return items, encode_page_token(kind, last) if last else ""

    async def update(
        self, kind: Kind[M], entity: M, paths: Sequence[str], field: str, *, check: bool = True
    ) -> M:
        """Replace the fields named by `paths` (or every non-empty one); errors name `field`.<name>."""
        entity_id: str = cast(Any, entity).id
        if not entity_id:
            raise InvalidArgument(f"{field}.id", "required: the id of the entity to update")

        def change(stored: M) -> M:
            updated = merge(kind.copy(stored), entity, paths)
            if isinstance(updated, scenario_pb2.Scenario) and isinstance(stored, scenario_pb2.Scenario):
                _check_reference_change(stored, updated)
            try:
                if check or kind is SCENARIO:
                    validate.validate(kind, updated)
            except InvalidArgument as exc:
                raise InvalidArgument(f"{field}.{exc.field}", exc.problem) from None
            cast(Any, updated).updated_at.CopyFrom(now())
            return updated

        return await self.store.modify(kind, entity_id, change, field_prefix=f"{field}.")

    async def delete(self, kind: Kind[Any], entity_id: str) -> None:
        """Delete a config; FAILED_PRECONDITION while a scenario refers to it."""
        if not entity_id:
            raise InvalidArgument("id", "required")
        if kind is SCENARIO:
            raise AssertionError("scenarios are deleted by ScenarioManager.delete_scenario")
        await self.store.delete(kind, entity_id)


def _check_reference_change(stored: scenario_pb2.Scenario, updated: scenario_pb2.Scenario) -> None:
    """A deployed scenario keeps its configs: they name what runs (topology id, network and compute ids)."""
    if not states.deployed(stored):
        return
    for field, _kind in REFERENCE_FIELDS:
        if getattr(stored, field) != getattr(updated, field):
            raise FailedPrecondition(
                f"cannot change {field} of scenario {stored.id!r} while it is deployed "
                f"({states.describe_statuses(stored)}); DELETE its services first"
            )
