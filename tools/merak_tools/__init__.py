"""The tools package: what a person runs, the `merak` CLI, the local stack and its supervisor, doctor,
teste2e, its report, the labs and the Alcor stand-in.

It imports the runtime (`merak`) and the services' gRPC clients (the `merak.v1` stubs); no service
imports it (an import-linter contract in pyproject.toml says so).
"""
