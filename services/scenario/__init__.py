"""The scenario service."""
