"""Alcor's protocols, which the emulator speaks so that Alcor's controllers can talk to it."""
