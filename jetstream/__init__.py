"""JetStream: stream and consumer state machines applied from Raft commits, the SQLite message
store, the $JS.API handlers, and push/pull delivery. May import raft and natsd."""
