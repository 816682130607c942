"""Replaced by engine.gen (`sigmatch gen`): the project's one synthetic-world generator.

What is left are the names bench/peers/world.py still imports, now taken from engine.gen;
delete this file once it imports them from there (T0 is its own start of time).
"""
from engine.gen import DAY, encode_events

__all__ = ["DAY", "T0", "encode_events"]

T0 = 1_767_225_600_000   # 2026-01-01T00:00:00Z
