"""Merak's Postman collections, run by newman as a chain: each created id carried into the next request.

Merak's collections hard-code their hosts (10.213.43.77:32000, localhost:3000, …) and the ids of one
run. Chaining rewrites a copy (never the collection itself, which stays outside the project): every URL
goes to `{{baseUrl}}`; the requests that create a config or a scenario come first (in the collection's
order), each saving `data.id`; every id in a path or a body is then the one created for its kind; the
collection's other requests follow in its order. Every request gets a test: HTTP 2xx with Merak's
envelope `"status": "OK"`, so newman fails on any other answer.

With `deploy`, the chain goes on as a user who deploys what the collection made: CHECK topology until
READY, DEPLOY network, DEPLOY compute, CHECK compute until every VM is done (a DEPLOY topology is added
unless the collection sends one). `teardown_collection` is the way back, in Merak's order: DELETE
compute, network and topology (each until the scenario says NONE), then every scenario and config made.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

# Where Merak's collections are: beside this project in the workplace (`shared/merak/`), or named.
COLLECTIONS_ENV = "MERAK_POSTMAN_DIR"
COLLECTION_FILES = ("poc-demo.postman_collection.json", "postman-collection.json")

# REST collection → the kind of id it holds, and the scenario's field that names it.
RESOURCES = {
    "topologies": "topology_id",
    "network-config": "network_config_id",
    "service-config": "service_config_id",
    "compute-config": "compute_config_id",
    "test-config": "test_config_id",
    "scenarios": "scenario_id",
}
POLL_ATTEMPTS = 300
POLL_INTERVAL_MS = 1000


def collections_dir() -> Path | None:
    """The folder holding Merak's collections, if this machine has it."""
    here = Path(__file__).resolve()
    candidates = [os.environ.get(COLLECTIONS_ENV, "")]
    candidates += [str(parent / "shared" / "merak") for parent in here.parents]
    candidates.append("/work/shared/merak")  # the workplace's, for a clone made elsewhere (CI)
    for candidate in candidates:
        if candidate and all((Path(candidate) / name).is_file() for name in COLLECTION_FILES):
            return Path(candidate)
    return None


def _requests(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The collection's requests in order (folders flattened)."""
    flat: list[dict[str, Any]] = []
    for item in items:
        if "item" in item:
            flat += _requests(item["item"])
        elif "request" in item:
            flat.append(item)
    return flat


def _path(item: dict[str, Any]) -> list[str]:
    url = item["request"]["url"]
    raw = url if isinstance(url, str) else url.get("raw", "")
    return [p for p in raw.split("?")[0].split("/")[1:] if p]


def _resource(item: dict[str, Any]) -> str:
    """`topologies`, …, `scenarios` (or `actions`) from /api/<resource>[/<id>]."""
    path = _path(item)
    if len(path) >= 3 and path[1] == "scenarios" and path[2] == "actions":
        return "actions"
    return path[1] if len(path) >= 2 else ""


def _is_create(item: dict[str, Any]) -> bool:
    return item["request"]["method"] == "POST" and _resource(item) in RESOURCES and len(_path(item)) == 2


def _script(lines: list[str]) -> dict[str, Any]:
    return {"script": {"type": "text/javascript", "exec": lines}}


OK_TEST = [
    'pm.test(pm.info.requestName + ": 2xx with Merak\'s OK envelope", function () {',
    "    pm.expect(pm.response.code, pm.response.text()).to.be.within(200, 299);",
    '    pm.expect(pm.response.json().status, pm.response.text()).to.eql("OK");',
    "});",
]


def _request(name: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": method, "header": [], "url": "{{baseUrl}}" + path}
    if body is not None:
        request["body"] = {"mode": "raw", "raw": json.dumps(body), "options": {"raw": {"language": "json"}}}
    return {"name": name, "request": request, "event": [{"listen": "test", **_script(OK_TEST)}]}


class Chain:
    """Rewrites one collection; `created` counts what it makes per resource (for the teardown)."""

    def __init__(self, collection: dict[str, Any]) -> None:
        self.collection = collection
        self.created: dict[str, int] = {}

    def _rewrite(self, item: dict[str, Any]) -> dict[str, Any]:
        item = copy.deepcopy(item)
        request = item["request"]
        path = _path(item)
        resource = _resource(item)
        if len(path) == 3 and resource in RESOURCES:
            path[2] = "{{" + RESOURCES[resource] + "}}"
        request["url"] = "{{baseUrl}}/" + "/".join(path)
        raw = request.get("body", {}).get("raw")
        if raw:
            body = json.loads(raw)
            for field in RESOURCES.values():
                if field in body:
                    body[field] = "{{" + field + "}}"
            request["body"]["raw"] = json.dumps(body)
        tests = list(OK_TEST)
        if _is_create(item):
            count = self.created[resource] = self.created.get(resource, 0) + 1
            field = RESOURCES[resource]
            tests += [
                "const id = pm.response.json().data.id;",
                f'pm.environment.set("{field}", id);',
                f'pm.environment.set("{field}_{count}", id);',
            ]
        item["event"] = [{"listen": "test", **_script(tests)}]
        return item

    def chained(self, *, deploy: bool) -> dict[str, Any]:
        """The collection as a chain (and, with `deploy`, followed by the deployment)."""
        requests = _requests(self.collection["item"])
        creates = [r for r in requests if _is_create(r)]
        first = [r for r in creates if _resource(r) != "scenarios"] + [
            r for r in creates if _resource(r) == "scenarios"
        ]
        rest = [r for r in requests if not _is_create(r)]
        items = [self._rewrite(r) for r in (*first, *rest)]
        if deploy:
            deployed = any(_deploys(r, "topology") for r in rest)
            items += deploy_items(deploy_topology=not deployed)
        return {
            "info": {**self.collection["info"], "name": f"{self.collection['info']['name']} (chained)"},
            "item": items,
        }

    def teardown_collection(self) -> dict[str, Any]:
        """DELETE compute, network, topology of the scenario, then every scenario and config made."""
        items = [
            _action("DELETE", service, until_status="NONE") for service in ("compute", "network", "topology")
        ]
        for resource in ("scenarios", *[r for r in RESOURCES if r != "scenarios"]):
            field = RESOURCES[resource]
            for n in range(1, self.created.get(resource, 0) + 1):
                items.append(
                    _request(f"delete {resource} {n}", "DELETE", f"/api/{resource}/{{{{{field}_{n}}}}}")
                )
        return {"info": {**self.collection["info"], "name": "teardown"}, "item": items}


def _fail(label: str) -> list[str]:
    """A failed test named `label`, showing the reply."""
    return [
        f'    pm.test("{label}", function () {{',
        "        pm.expect.fail(pm.response.text());",
        "    });",
    ]


def _deploys(item: dict[str, Any], service: str) -> bool:
    if _resource(item) != "actions":
        return False
    body = json.loads(item["request"].get("body", {}).get("raw") or "{}")
    asked = body.get("service") or (body.get("services") or [{}])[0]
    return bool(asked.get("action") == "DEPLOY" and str(asked.get("service_name", "")).lower() == service)


def _action(
    action: str, service: str, *, until: str = "", until_status: str = "", failed: str = "false"
) -> dict[str, Any]:
    """An action on the chain's scenario; `until` polls a CHECK (a JS condition on `reply`; `failed`
    ends the polls with a failure), and `until_status` polls the scenario until `<service>_status`
    reads it (for a DELETE)."""
    body = {"scenario_id": "{{scenario_id}}", "service": {"service_name": service, "action": action}}
    item = _request(f"{action} {service}", "POST", "/api/scenarios/actions", body)
    items = [item]
    if until or until_status:
        name = f"wait for {service}"
        check = (
            _request(
                name,
                "POST",
                "/api/scenarios/actions",
                {"scenario_id": "{{scenario_id}}", "service": {"service_name": service, "action": "CHECK"}},
            )
            if until
            else _request(name, "GET", "/api/scenarios/{{scenario_id}}")
        )
        condition = until or f'reply.data.{service}_status === "{until_status}"'
        check["event"].append(
            {
                "listen": "test",
                **_script(
                    [
                        "const reply = pm.response.json();",
                        'const tries = Number(pm.environment.get("tries") || 0) + 1;',
                        f"if ({condition}) {{",
                        '    pm.environment.set("tries", 0);',
                        f"}} else if ({failed}) {{",
                        '    pm.environment.set("tries", 0);',
                        *_fail(f"{name}: failed"),
                        f"}} else if (tries < {POLL_ATTEMPTS}) {{",
                        '    pm.environment.set("tries", tries);',
                        "    pm.execution.setNextRequest(pm.info.requestName);",
                        "} else {",
                        *_fail(f"{name}: done within {POLL_ATTEMPTS} polls"),
                        "}",
                    ]
                ),
            }
        )
        check["event"].append(
            {
                "listen": "prerequest",
                **_script(
                    [
                        'if (Number(pm.environment.get("tries") || 0) > 0) {',
                        f"    setTimeout(function () {{}}, {POLL_INTERVAL_MS});",
                        "}",
                    ]
                ),
            }
        )
        items.append(check)
    return {"name": f"{action} {service}", "item": items}


def deploy_items(*, deploy_topology: bool) -> list[dict[str, Any]]:
    """The DEPLOY actions Merak's teste2e sends, each polled as it polled them."""
    topology_ready = (
        "reply.message.split(',')[1].split(':')[1].trim() !== '0' && "
        "reply.data.computeNodes.every(function (n) { return n.status === 'READY'; })"
    )
    compute_done = "(function (w) { return w[0] === w[3]; })(String(reply.data.vms[0].id).split(' '))"
    compute_failed = (
        "Boolean(reply.data.progress && reply.data.progress.finished && reply.data.progress.error)"
    )
    items = []
    if deploy_topology:
        items.append(
            _request(
                "DEPLOY topology",
                "POST",
                "/api/scenarios/actions",
                {
                    "scenario_id": "{{scenario_id}}",
                    "service": {"service_name": "topology", "action": "DEPLOY"},
                },
            )
        )
    check_topology = _action("CHECK", "topology", until=topology_ready)
    items += check_topology["item"][1:]
    items.append(_action("DEPLOY", "network"))
    items.append(_action("DEPLOY", "compute", until=compute_done, failed=compute_failed))
    return items
