"""Merak services: scenario, topology, network, compute, agent."""
