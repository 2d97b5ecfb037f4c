"""Checkers: pure functions from a history (list of Op) to a verdict dict with a `valid` key
(True, False, or "unknown")."""
