"""The meta group: stream/consumer assignments, placement, the reconciler and the admin API."""
