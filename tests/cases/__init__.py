"""Conformance cases, one file per transform family."""
