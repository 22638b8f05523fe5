"""Every test of the project lives here, in the folder of the real parts it needs.

- unit/<package>/: no server, socket, process or namespace: models, generators, validation, CLI parsing.
- integration/: real parts in the test process: Redis, the Temporal dev server, gRPC on port 0,
  network namespaces; services built by their own composition roots (tests/stack.py).
- e2e/: the local stack as processes, driven as a user drives it.
- deploy/: the Dockerfile, the compose file and the Kubernetes manifests, checked against schemas.
- kubernetes/: the Kubernetes backend against the fake API server (or a cluster with KUBECONFIG).
- reliability/: faults while the product works (killed processes, Redis restarts, fuzzed messages).
- support/: what the tests share: the fixtures with real parts (a pytest plugin loaded by conftest.py),
  polling with a deadline, free ports, unique names; fakes/: the Kubernetes API server stand-in.
"""
