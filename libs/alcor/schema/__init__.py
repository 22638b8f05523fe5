"""Alcor's southbound schema (package `alcor.schema`), generated from proto/alcor/schema (`make proto`); not committed."""
