"""The REST API's Swagger UI works where labs run, offline: the product serves the page and its assets,
and a headless Chromium that can reach nothing but this host renders the API's operations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from services.scenario.app import build
from services.scenario.config import ScenarioSettings
from tests.support.plugin import ServeBuilt

NOWHERE = "127.0.0.1:1"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
URL = re.compile(r"https?://[^\s\"'<>()]+")
ACTION_SUMMARY = "DEPLOY, CHECK, DELETE or UPDATE one service"


@pytest.fixture
async def rest_url(serve_built: ServeBuilt, redis_url: str) -> str:
    """The scenario service alone (the other services unreachable): its REST API's base URL."""
    settings = ScenarioSettings(
        host="127.0.0.1", grpc_port=0, rest_port=0, redis_url=redis_url, call_timeout=2,
        topology_address=NOWHERE, network_address=NOWHERE, compute_address=NOWHERE,
    )  # fmt: skip
    built = await build(settings)
    await serve_built(built)
    return f"http://{built.listeners['rest']}"


def outside(urls: list[str]) -> list[str]:
    """The URLs that leave this host."""
    return [url for url in urls if urlsplit(url).hostname not in LOCAL_HOSTS]


async def test_swagger_page_and_assets_are_served_by_the_product(rest_url: str) -> None:
    async with httpx.AsyncClient(base_url=rest_url) as client:
        page = await client.get("/swagger/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert outside(URL.findall(page.text)) == []
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(assets) == 3 and all(asset.startswith("/swagger/assets/") for asset in assets)
        kinds = {}
        for asset in assets:
            reply = await client.get(asset)
            assert reply.status_code == 200 and reply.content, asset
            kinds[asset.rsplit(".", 1)[1]] = reply.headers["content-type"].split(";")[0]
        assert kinds == {"js": "text/javascript", "css": "text/css", "png": "image/png"}
        assert "'/openapi.json'" in page.text and '"validatorUrl": null' in page.text
        moved = await client.get("/swagger")  # as with FastAPI's own page, the bare path redirects
        assert (moved.status_code, moved.headers["location"]) == (307, f"{rest_url}/swagger/")
        assert (await client.get("/swagger/assets/nope.js")).status_code == 404
        assert "/swagger/" not in (await client.get("/openapi.json")).json()["paths"]


async def test_a_browser_without_internet_renders_the_operations(rest_url: str) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make apt` installs it)")
    with tempfile.TemporaryDirectory(prefix="merak-swagger-", ignore_cleanup_errors=True) as tmp:
        net_log = Path(tmp, "net-log.json")
        dom = await dump_dom(chromium, f"{rest_url}/swagger/", Path(tmp, "profile"), net_log)
        requested = page_requests(net_log, rest_url)
    async with httpx.AsyncClient(base_url=rest_url) as client:
        spec = (await client.get("/openapi.json")).json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    # Every operation of the served spec is rendered, the synchronous action among them.
    assert operations > 20 and len(re.findall(r'class="opblock opblock-', dom)) == operations
    assert 'data-path="/api/scenarios/actions"' in dom and ACTION_SUMMARY in dom
    assert 'data-path="/api/topologies/{entity_id}"' in dom
    loaded = {f"{rest_url}{path}" for path in ("/openapi.json", "/swagger/assets/swagger-ui.css",
                                                "/swagger/assets/swagger-ui-bundle.js")}  # fmt: skip
    assert loaded <= requested and outside(sorted(requested)) == []


def page_requests(net_log: Path, origin: str) -> set[str]:
    """The URLs the page asked for (not the browser's own calls home, which no page can avoid)."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return {
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job and event.get("params", {}).get("initiator") == origin
    }


async def dump_dom(chromium: str, url: str, profile: Path, net_log: Path) -> str:
    """The page's DOM once its scripts have run, as headless Chromium sees it with no name resolving
    but this host's (an air-gapped lab), recording every request it made in `net_log`."""
    process = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        f"--user-data-dir={profile}", f"--log-net-log={net_log}", "--virtual-time-budget=10000",
        "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its renderer and helpers are killed with it
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()
