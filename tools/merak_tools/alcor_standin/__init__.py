"""An Alcor-compatible REST server, answering with the status codes and bodies alcor-reference.md gives.

It covers what Merak calls: the node manager (bulk registration, delete), the VPC, subnet, route and
security-group managers (groups and rules), and the port manager. It records every request (listener,
method, path, JSON body) so tests can assert exactly what was sent, and can add latency to every
answer (the benchmark's "control plane that takes 20 ms").

Alcor runs one microservice per port. `FakeAlcor()` serves every path on one port (as behind Alcor's
API gateway); `FakeAlcor(services=ALCOR_SERVICES)` opens one listener per service, each answering only
its own paths (404 otherwise, like a call sent to the wrong microservice), all sharing one state.
It is served by its own HTTP/1.1 server (http.py) on an event loop of its own thread: thousands of
requests per second, so a load test measures the emulator and not this stand-in; each request's time
held is taken at the socket, from its last byte read to its answer written.

Like Alcor's DPM and NCM, it pushes goal states (GoalStateV2 on PushGoalStatesStream) to the agents of
the registered nodes when a port is bound to a host or deleted (southbound.py), and records every push
(`state.pushes`) and per-port times (`state.port_times`); `FakeAlcor(southbound=False)` does not.

`python -m merak_tools.alcor_standin --nodeports` serves it on Alcor's NodePorts on 127.0.0.1, for
`teste2e --plugin alcor --alcor-ip 127.0.0.1`.
"""

from merak_tools.alcor_standin.server import ALCOR_NODEPORTS, ALCOR_SERVICES, FakeAlcor
from merak_tools.alcor_standin.southbound import Southbound
from merak_tools.alcor_standin.state import AlcorState, FailRule, Push, Recorded

__all__ = [
    "ALCOR_NODEPORTS",
    "ALCOR_SERVICES",
    "AlcorState",
    "FailRule",
    "FakeAlcor",
    "Push",
    "Recorded",
    "Southbound",
]
