"""The compute service."""
