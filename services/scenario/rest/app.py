"""Merak's REST scenario manager (:3000) over the same managers as the gRPC API.

Routes, envelope `{status, message, data}`, server-assigned 32-hex ids, fixed messages and the
synchronous `POST /api/scenarios/actions` follow merak-rest-reference.md; where this differs from
Merak (its quirks), the README's REST section says so.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel

from merak import protojson
from merak.errors import MerakError, NotFound, ServiceError
from merak.logs import get_logger
from merak.v1 import scenario_pb2, topology_pb2
from services.scenario import states, translate
from services.scenario.entities import EntityManager
from services.scenario.manager import ScenarioManager
from services.scenario.models import (
    COMPUTE,
    COMPUTE_CONFIG,
    NETWORK_CONFIG,
    SCENARIO,
    SERVICE_BY_NAME,
    SERVICE_CONFIG,
    TEST_CONFIG,
    TOPOLOGY_CONFIG,
    Kind,
)
from services.scenario.rest import auth, docs, models

log = get_logger(__name__)

OK, FAILED = "OK", "FAILED"
ACTION_FAILED = "Scenario Action Failed."
PAGE = 1000


@dataclass(frozen=True, slots=True)
class RestKind:
    """One REST collection: its path, what it stores, its body, and Merak's fixed messages."""

    path: str
    kind: Kind[Any]
    body: type[BaseModel]
    created: str
    not_found: str
    deleted: str


KINDS: tuple[RestKind, ...] = (
    RestKind(
        "topologies", TOPOLOGY_CONFIG, models.Topology,
        "Topology Has been created successfully.", "Topology not found!", "Topology has been deleted!",
    ),
    RestKind(
        "network-config", NETWORK_CONFIG, models.Network,
        "Network config has been created successfully.", "Network config not found!",
        "Network config has been deleted!",
    ),
    RestKind(
        "service-config", SERVICE_CONFIG, models.ServiceConfig,
        "Service config has been created successfully.", "Service config not found!",
        "Service config has been deleted!",
    ),
    RestKind(
        "compute-config", COMPUTE_CONFIG, models.Compute,
        "Compute config has been created successfully.", "Compute config not found!",
        "Compute config has been deleted!",
    ),
    RestKind(
        "test-config", TEST_CONFIG, models.TestConfig,
        "Test config has been created successfully.", "Test config not found!",
        "Test config has been deleted!",
    ),
    RestKind(
        "scenarios", SCENARIO, models.Scenario,
        "Scenario Has been created successfully.", "Scenario not found!", "Scenario has been deleted!",
    ),
)  # fmt: skip

# A new scenario's references, checked in Merak's order, with Merak's messages.
SCENARIO_REFERENCES: tuple[tuple[str, Kind[Any], str], ...] = (
    ("topology_id", TOPOLOGY_CONFIG, "topology not found"),
    ("service_config_id", SERVICE_CONFIG, "service config not found"),
    ("network_config_id", NETWORK_CONFIG, "network config not found"),
    ("compute_config_id", COMPUTE_CONFIG, "compute config not found"),
    ("test_config_id", TEST_CONFIG, "test config not found"),
)
SERVICE_NAMES = {
    "topology": scenario_pb2.TOPOLOGY,
    "network": scenario_pb2.NETWORK,
    "compute": scenario_pb2.COMPUTE,
}
ACTIONS = {
    "DEPLOY": scenario_pb2.DEPLOY,
    "CHECK": scenario_pb2.CHECK,
    "DELETE": scenario_pb2.DELETE,
    "UPDATE": scenario_pb2.UPDATE,
}  # fmt: skip


def envelope(status: str, message: str, data: Any = None, code: int = 200) -> JSONResponse:
    """Merak's reply: `{"data": …, "message": …, "status": "OK"|"FAILED"}`."""
    return JSONResponse({"data": data, "message": message, "status": status}, status_code=code)


# An error's gRPC code (ours, or a callee's that a ServiceError carries) as an HTTP status: what the client
# asked that cannot be done is 4xx; 500 is left for a fault of the product.
_HTTP_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_code(exc: MerakError) -> int:
    """The HTTP status of a refused request."""
    return _HTTP_CODES.get(exc.code, 500)


def failure(exc: MerakError, not_found: str) -> JSONResponse:
    """A domain error as Merak's FAILED envelope; the message says why (Merak only logged it)."""
    if isinstance(exc, NotFound):
        return envelope(FAILED, not_found, code=404)
    return envelope(FAILED, exc.message, code=http_code(exc))


def create_app(entities: EntityManager, manager: ScenarioManager, token: str = "") -> FastAPI:
    """The REST API over the scenario service's managers; with a `token`, only for who presents it."""
    app = FastAPI(
        title="Merak scenario manager",
        description="Merak's REST API (scenarios, configs, actions), served by the scenario service.",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    docs.mount_docs(app, "/openapi.json")
    metrics = manager.metrics
    if token:
        # Added first, so that it runs inside `observe`: refused requests are logged and counted too.
        auth.require_token(app, token)

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        elapsed = time.perf_counter() - started
        metrics.http_requests.labels(request.method, template, str(response.status_code)).inc()
        metrics.http_seconds.labels(request.method, template).observe(elapsed)
        log.info(
            "http",
            method=request.method,
            route=template,
            status=response.status_code,
            duration_ms=round(elapsed * 1000, 2),
        )
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'] if p != 'body') or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        if "json" not in request.headers.get("content-type", ""):
            problems = f"{problems}; send JSON with Content-Type: application/json".lstrip("; ")
        return envelope(FAILED, problems or "the body is not valid JSON", code=400)

    @app.get("/", response_class=PlainTextResponse, include_in_schema=False)
    async def root() -> str:
        return "OK"

    @app.get("/api", response_class=PlainTextResponse, include_in_schema=False)
    async def welcome() -> str:
        return "Welcome to Merak - Cloud Emulator"

    _action_route(app, entities, manager)
    for rest in KINDS:
        _crud_routes(app, rest, entities, manager)
    return app


def _route(
    app: FastAPI, method: str, path: str, handler: Callable[..., Awaitable[Any]], summary: str
) -> None:
    """`path` and `path/` (Fiber matched both)."""
    app.add_api_route(path, handler, methods=[method], summary=summary)
    app.add_api_route(path + "/", handler, methods=[method], include_in_schema=False)


def _crud_routes(app: FastAPI, rest: RestKind, entities: EntityManager, manager: ScenarioManager) -> None:
    kind, body_type, base = rest.kind, rest.body, f"/api/{rest.path}"

    async def create(body: BaseModel) -> JSONResponse:
        try:
            message, _ = models.to_proto(body)
            if kind is SCENARIO:
                for field, ref_kind, missing in SCENARIO_REFERENCES:
                    ref = getattr(message, field)
                    if not ref or await entities.store.get(ref_kind, ref) is None:
                        return envelope(FAILED, missing, code=404)
            created = await entities.create(kind, message, check=False)
        except MerakError as exc:
            return failure(exc, rest.not_found)
        return envelope(OK, rest.created, models.to_json(created))

    async def list_all() -> JSONResponse:
        items: list[Any] = []
        token = ""
        while True:
            page, token = await entities.list(kind, PAGE, token)
            items += page
            if not token:
                break
        return envelope(OK, "OK", [models.to_json(item) for item in items])

    async def get(entity_id: str) -> JSONResponse:
        try:
            entity = await entities.get(kind, entity_id)
            if kind is SCENARIO:
                entity = await manager.current(entity)
            return envelope(OK, "OK", models.to_json(entity))
        except MerakError as exc:
            return failure(exc, rest.not_found)

    async def update(entity_id: str, body: BaseModel) -> JSONResponse:
        try:
            message, fields = models.to_proto(body, set(body.model_fields_set))
            if not fields:
                return envelope(OK, "OK", models.to_json(await entities.get(kind, entity_id)))
            message.id = entity_id  # type: ignore[attr-defined]  # every entity has an id
            updated = await entities.update(kind, message, fields, "body", check=False)
        except MerakError as exc:
            return failure(exc, rest.not_found)
        return envelope(OK, "OK", models.to_json(updated))

    async def delete(entity_id: str, teardown: bool = False) -> JSONResponse:
        try:
            if kind is SCENARIO:
                await manager.delete_scenario(entity_id, teardown)
            else:
                await entities.delete(kind, entity_id)
        except MerakError as exc:
            return failure(exc, rest.not_found)
        return envelope(OK, rest.deleted)

    # The handlers' body type is per kind: FastAPI reads it from the annotations, which must be the
    # class itself (this module's annotations are strings, and `body_type` is local).
    create.__annotations__["body"] = body_type
    update.__annotations__["body"] = body_type
    label = kind.label
    _route(app, "POST", base, create, f"create a {label} (the id is assigned)")
    _route(app, "GET", base, list_all, f"every {label}")
    _route(app, "GET", base + "/{entity_id}", get, f"one {label}")
    _route(app, "PUT", base + "/{entity_id}", update, f"update the fields given of a {label}")
    _route(app, "DELETE", base + "/{entity_id}", delete, f"delete a {label}")


def _action_route(app: FastAPI, entities: EntityManager, manager: ScenarioManager) -> None:
    async def action(body: models.ScenarioAction) -> JSONResponse:
        asked = body.chosen()
        echo = {
            "scenario_id": body.scenario_id,
            "service": {"service_name": asked.service_name, "action": asked.action, "status": ""},
        }
        service = SERVICE_NAMES.get(asked.service_name.strip().lower())
        if service is None:
            known = ", ".join(SERVICE_NAMES)
            why = f"unknown service_name {asked.service_name!r}; known: {known}"
            return envelope(FAILED, f"{ACTION_FAILED} {why}", echo, code=400)
        verb = ACTIONS.get(asked.action)
        if verb is None:
            why = f"unknown action {asked.action!r}; known: {', '.join(ACTIONS)}"
            return envelope(FAILED, f"{ACTION_FAILED} {why}", echo, code=400)
        try:
            scenario = await entities.get(SCENARIO, body.scenario_id)
        except MerakError:
            return envelope(FAILED, "Scenario not found!", code=404)
        part = SERVICE_BY_NAME[service]
        if verb == scenario_pb2.CHECK and states.status_of(scenario, part) == scenario_pb2.NONE:
            # Merak answered a CHECK of what was never deployed with empty counts (its teste2e reads
            # `data.vms[0].id`); the gRPC API calls it a FAILED_PRECONDITION.
            message = translate.summary("CHECK", part.title, scenario_pb2.StatusCounts())
            data: dict[str, Any] | None = {"vms": [{"id": "0 out of 0 done!"}]} if part is COMPUTE else {}
            return envelope(OK, f"Action successfully - {message}", data)
        try:
            reply = await manager.action(body.scenario_id, service, verb)
        except MerakError as exc:
            return envelope(FAILED, f"{ACTION_FAILED} {exc.message}", echo, code=http_code(exc))
        which = reply.WhichOneof("reply")
        data = models.reply_json(getattr(reply, which)) if which else None
        message = f"Action successfully - {reply.return_message}"
        if reply.warnings:
            message += f". Left out, as Merak did: {'; '.join(reply.warnings)}"
        return envelope(OK, message, data)

    _route(app, "POST", "/api/scenarios/actions", action, "DEPLOY, CHECK, DELETE or UPDATE one service")

    async def results(scenario_id: str) -> JSONResponse:
        try:
            reply = await manager.results(scenario_id)
        except MerakError as exc:
            return failure(exc, "Scenario not found!")
        return envelope(OK, "OK", protojson.to_dict(reply))

    _route(app, "GET", "/api/scenarios/{scenario_id}/results", results, "the control plane's results")
    _faults_routes(app, manager)


def _faults_routes(app: FastAPI, manager: ScenarioManager) -> None:
    """A running lab's impairments (the topology service's SetFaults / ListFaults / ClearFaults)."""

    async def call(method: str, request: Message) -> JSONResponse:
        try:
            reply = await manager.clients.topology_faults(method, request)
        except ServiceError as exc:
            return envelope(FAILED, exc.message, code=http_code(exc))
        return envelope(OK, "OK", protojson.to_dict(reply))

    async def show(topology_id: str) -> JSONResponse:
        return await call("ListFaults", topology_pb2.ListFaultsRequest(topology_id=topology_id))

    async def replace(topology_id: str, request: Request) -> JSONResponse:
        wanted = topology_pb2.SetFaultsRequest()
        try:
            json_format.Parse(await request.body() or b"{}", wanted)
        except json_format.ParseError as exc:
            return envelope(FAILED, f"body: {str(exc)[:300]}", code=400)
        wanted.topology_id = topology_id
        return await call("SetFaults", wanted)

    async def clear(topology_id: str) -> JSONResponse:
        return await call("ClearFaults", topology_pb2.ClearFaultsRequest(topology_id=topology_id))

    path = "/api/topologies/{topology_id}/faults"
    _route(app, "GET", path, show, "the impairments a running lab suffers")
    _route(app, "PUT", path, replace, "make the lab suffer exactly these impairments (SetFaultsRequest JSON)")
    _route(app, "DELETE", path, clear, "heal the lab")
