"""The `jetraft` command: server, cluster, admin, bench, jepsen."""
