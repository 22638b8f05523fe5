"""The topology service."""
