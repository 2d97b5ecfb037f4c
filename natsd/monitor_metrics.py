"""/metrics: the server's figures in the Prometheus text format, via prometheus_client.

How it works: a `CollectorRegistry` per Monitor holds one custom collector. At every scrape it
builds metric families from the same live figures as /varz (connections, messages and bytes in
and out, slow consumers, subscriptions, routes, memory) and appends whatever the registered
"metrics" provider yields (JetStream and Raft: per-stream messages/bytes/leader, Raft terms and
commit lag, fsync and publish-to-ack latency histograms; jetstream/monitoring.py).
`prometheus_client.generate_latest` renders the text. Metric names use the `nats_` prefix of the
Prometheus NATS exporter for the core figures and `jetraft_` for our own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from natsd.monitor_views import totals


class _CoreCollector:
    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        server = self.monitor.server
        in_msgs, in_bytes, out_msgs, out_bytes = totals(server)
        labels = ["server_id", "server_name"]
        ident = [server.server_id, server.server_name]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(ident, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric(ident, value)
            return family

        yield gauge("nats_varz_connections", "Open client connections.", len(server.clients))
        yield counter("nats_varz_total_connections", "Client connections accepted.", server._next_cid)
        yield counter("nats_varz_in_msgs", "Messages received from clients.", in_msgs)
        yield counter("nats_varz_out_msgs", "Messages sent to clients.", out_msgs)
        yield counter("nats_varz_in_bytes", "Payload bytes received from clients.", in_bytes)
        yield counter("nats_varz_out_bytes", "Payload bytes sent to clients.", out_bytes)
        yield counter("nats_varz_slow_consumers", "Connections closed as slow consumers.",
                      server.slow_consumers)
        yield gauge("nats_varz_subscriptions", "Subscriptions.", server.sublist.count())
        routes = len(server.cluster.routes) if server.cluster is not None else 0
        yield gauge("nats_varz_routes", "Registered cluster routes.", routes)
        yield gauge("nats_varz_mem", "Resident memory in bytes.", self.monitor.process_stats().mem_bytes)
        extra = self.monitor._call("metrics")
        if extra is not None:
            yield from extra


def registry_for(monitor: Any) -> CollectorRegistry:
    registry = getattr(monitor, "_prometheus_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_CoreCollector(monitor))
        monitor._prometheus_registry = registry
    return registry


def render(monitor: Any) -> tuple[bytes, str]:
    """(body, content type) of one scrape."""
    return generate_latest(registry_for(monitor)), CONTENT_TYPE_LATEST
