"""The runtime library every service imports: settings, the process lifecycle, logs, metrics, errors,
ids and names, the gRPC server and clients, TLS, Redis (stores, optimistic transactions), Temporal,
network namespaces, kernel probes, the vhosts file, statistics; `v1/` holds the generated protos.

It knows no service and no tool: nothing here imports `services`, `merak_tools`, `bench` or `tests`
(an import-linter contract, `make lint`)."""
