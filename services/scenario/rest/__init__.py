"""Merak's REST scenario manager, served by the scenario service beside its gRPC API."""
