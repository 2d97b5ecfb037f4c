"""Black-box fault-injection harness. Talks to servers only over the network and through
processes, never by importing the server code.

Modules: db (server processes, by PID), proxy (fault-injecting TCP proxies on cluster links),
schedule (seeded fault plan, pure), nemesis (applies it), client (nats-py helpers), workloads
(queue, kv, set), history (ops as JSON lines), checkers (pure: queue, kv linearizability, set),
report (verdict, table, plots, HTML), runner (one run end to end). Entry point:
`jetraft jepsen run ...` / `jetraft jepsen report DIR` (cli/jepsen_cmd.py).
"""
