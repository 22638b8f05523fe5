"""The REST API's optional bearer token (MERAK_REST_TOKEN / MERAK_REST_TOKEN_FILE): asked of the API and
its docs page, compared whole, refused with 401 in Merak's envelope; `/` stays open; unset, nothing
changes; teste2e's REST client presents it from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from merak_tools.teste2e.rest import ENV_TOKEN, ENV_TOKEN_FILE, rest_client
from services.scenario.app import build
from services.scenario.config import ScenarioSettings
from tests.support.plugin import ServeBuilt

NOWHERE = "127.0.0.1:1"
TOKEN = "9f2c7a51-merak-test-token"
TOPOLOGY = {"name": "t1", "type": "TREE", "number_of_vhosts": 2, "number_of_racks": 1, "vhosts_per_rack": 2}


async def _rest(serve_built: ServeBuilt, redis_url: str, **settings: Any) -> str:
    """The scenario service alone (the other services unreachable); its REST API's base URL."""
    built = await build(
        ScenarioSettings(
            host="127.0.0.1", grpc_port=0, rest_port=0, redis_url=redis_url, call_timeout=2,
            topology_address=NOWHERE, network_address=NOWHERE, compute_address=NOWHERE, **settings,
        )
    )  # fmt: skip
    await serve_built(built)
    return f"http://{built.listeners['rest']}"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_is_asked_of_the_api_and_its_docs(serve_built: ServeBuilt, redis_url: str) -> None:
    base = await _rest(serve_built, redis_url, rest_token=SecretStr(TOKEN))
    async with httpx.AsyncClient(base_url=base) as client:
        for path in ("/api", "/api/topologies", "/swagger/", "/openapi.json"):
            for headers in (
                {},
                _bearer("wrong"),
                _bearer(TOKEN[:-1]),
                _bearer(TOKEN + "x"),
                {"Authorization": TOKEN},
            ):
                refused = await client.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert refused.json() == {
                    "data": None,
                    "message": "Unauthorized: send the API's token as Authorization: Bearer <token>",
                    "status": "FAILED",
                }
                assert refused.headers["www-authenticate"].startswith("Bearer")
            assert (await client.get(path, headers=_bearer(TOKEN))).status_code == 200, path
        # A refused write changes nothing.
        assert (await client.post("/api/topologies", json=TOPOLOGY)).status_code == 401
        listed = await client.get("/api/topologies", headers=_bearer(TOKEN))
        assert listed.json()["data"] == []
        created = await client.post(
            "/api/topologies", json=TOPOLOGY, headers={"authorization": f"bearer {TOKEN}"}
        )
        assert created.json()["status"] == "OK"
        # `/` answers "OK" to anyone: a probe's target, with nothing in it.
        root = await client.get("/")
        assert (root.status_code, root.text) == (200, "OK")


async def test_without_a_token_nothing_is_asked(serve_built: ServeBuilt, redis_url: str) -> None:
    base = await _rest(serve_built, redis_url)
    async with httpx.AsyncClient(base_url=base) as client:
        for path in ("/api", "/api/topologies", "/swagger/", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path


async def test_a_token_file_and_the_tools_client(
    serve_built: ServeBuilt, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "rest-token"
    token_file.write_text(TOKEN + "\n")
    base = await _rest(serve_built, redis_url, rest_token_file=token_file)
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    monkeypatch.delenv(ENV_TOKEN_FILE, raising=False)
    async with rest_client(base, 5) as anonymous:
        assert (await anonymous.get("/api/topologies")).status_code == 401
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    async with rest_client(base, 5) as client:
        assert (await client.get("/api/topologies")).json()["status"] == "OK"
    monkeypatch.delenv(ENV_TOKEN)
    monkeypatch.setenv(ENV_TOKEN_FILE, str(token_file))
    async with rest_client(base, 5) as client:
        assert (await client.get("/api/topologies")).json()["status"] == "OK"


async def test_a_token_setting_that_cannot_be_used_stops_the_start(redis_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"rest_token_file": tmp_path / "missing"}, FileNotFoundError, "missing"),
        ({"rest_token_file": empty}, ValueError, "holds no token"),
        ({"rest_token_file": empty, "rest_token": SecretStr(TOKEN)}, ValueError, "set one of them"),
    ]
    for settings, error, words in cases:
        with pytest.raises(error, match=words):
            await build(
                ScenarioSettings(
                    host="127.0.0.1", grpc_port=0, rest_port=0, redis_url=redis_url,
                    topology_address=NOWHERE, network_address=NOWHERE, compute_address=NOWHERE, **settings,
                )
            )  # fmt: skip
