"""The Raft library: a pure core (no I/O, no clock, no unseeded random), storage, transports,
a trio driver, and testing/ (the deterministic simulator). Imports nothing of ours."""
