"""Core NATS: protocol parser/encoder, subjects and the subscription index, client
connections, routes, and the server object that wires them. Imports nothing of raft, meta or
jetstream."""
