"""Shared code of every Merak service: settings, logs, metrics, gRPC bootstrap, errors, stores."""
