"""Deterministic simulation of Raft clusters: simulated network and disk, invariant checkers and
a seeded sweep (`python -m raft.testing.sweep`)."""
