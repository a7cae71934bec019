"""Keep :class:`~kptrace.monitor.cache.ClusterCache` current with the Kubernetes watch API, one thread a
resource, the way client-go's reflector does: list (in pages), then watch from the list's
resourceVersion with bookmarks (so a resumed watch starts from a recent version); a watch that ends
(``timeoutSeconds``) or drops resumes from the last version seen; 410 Gone (the version was compacted
away) means relist; other errors back off exponentially (with jitter) up to ``backoff_max``.

Watch streams are read as raw JSON lines, never turned into the client's model objects (3-5x slower,
see :func:`kptrace.sources.kube._get_page`, whose paged list this reuses).
"""

from __future__ import annotations

import functools
import json
import random
import threading
from typing import Callable

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from kptrace.errors import KptraceError
from kptrace.sources.kube import RESOURCE_LISTINGS, configuration, list_all

__all__ = ["Watcher", "api_client"]

#: resource -> its listing (client call, kind) in kptrace.sources.kube
LISTINGS = {listing.resource: listing for listing in RESOURCE_LISTINGS}


class _Gone(Exception):
    """410 Gone: the resourceVersion is older than the server's history; relist."""


class WatchError(Exception):
    """The server ended the watch with an ERROR event other than 410."""


def api_client(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    cfg = configuration(kubeconfig, context)
    cfg.retries = False  # the watcher's own backoff decides when to try again
    return client.ApiClient(cfg)


class Backoff:
    """Exponential delays with full jitter, ``first`` doubling up to ``most``; :meth:`reset` after a success."""

    def __init__(self, first: float = 0.5, most: float = 30.0) -> None:
        self.first, self.most, self.n = first, most, 0

    def next(self) -> float:
        self.n += 1
        return random.uniform(0.5, 1.0) * min(self.most, self.first * 2 ** (self.n - 1))

    def reset(self) -> None:
        self.n = 0


class Watcher(threading.Thread):
    """List and watch one resource into ``cache``; ``on_change()`` after every relevant change."""

    def __init__(self, resource: str, api: client.ApiClient, cache, metrics, log, stop: threading.Event,
                 on_change: Callable[[], None], *, watch_timeout: int = 300, api_timeout: float = 30.0,
                 page_size: int = 500, backoff_max: float = 30.0, field_selector: str | None = None) -> None:
        super().__init__(name=f"watch-{resource}", daemon=True)
        listing = LISTINGS[resource]
        self.resource = resource
        call = getattr(getattr(client, listing.api_class)(api), listing.method)
        # One node's monitor needs only its own Node (as kube-proxy watches only its own): a field selector spares
        # the API server sending every node's status updates to every DaemonSet pod.
        self.call = functools.partial(call, field_selector=field_selector) if field_selector else call
        self.listing = listing
        self.host = api.configuration.host
        self.cache, self.metrics, self.log, self.stop = cache, metrics, log, stop
        self.on_change = on_change
        self.watch_timeout, self.api_timeout, self.page_size = watch_timeout, api_timeout, page_size
        self.backoff = Backoff(most=backoff_max)
        self.version: str | None = None
        self.expired_in_a_row = 0

    def run(self) -> None:
        while not self.stop.is_set():
            reason = None
            try:
                if self.version is None:
                    self._list()
                self._watch()
                self.backoff.reset()
                self.expired_in_a_row = 0
                continue
            except _Gone:
                # Relist at once: waiting would only widen the gap. Unless the watch from a fresh list expired too
                # (a server whose history is shorter than a list takes): then back off like any other error.
                reason, self.version = "expired", None
                self.expired_in_a_row += 1
                self.log.info("watch expired, relisting", resource=self.resource)
            except (urllib3.exceptions.ProtocolError, ConnectionError) as e:
                reason = "disconnect"  # resume from the last version seen
                self.log.warning("watch connection dropped", resource=self.resource, error=str(e)[:300])
            except (KptraceError, ApiException, WatchError, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                reason = "error"
                text = e.render() if isinstance(e, KptraceError) else f"{type(e).__name__}: {e}"
                self.log.error("watch failed", resource=self.resource, error=text[:500])
            self.metrics.watch_restarts.labels(self.resource, reason).inc()
            if reason != "expired" or self.expired_in_a_row > 1:
                self.stop.wait(self.backoff.next())

    def _list(self) -> None:
        version, items = list_all(self.call, self.listing, self.host, self.page_size, self.api_timeout)
        changed = self.cache.replace(self.resource, items)
        self.version = version
        self.metrics.relists.labels(self.resource).inc()
        self.metrics.objects.labels(self.resource).set(len(items))
        self.log.info("listed", resource=self.resource, objects=len(items), resource_version=version)
        if changed:
            self.on_change()

    def _watch(self) -> None:
        # The read timeout outlasts the server's own end of the watch: silence longer than that is a dead connection.
        resp = self.call(watch=True, resource_version=self.version, allow_watch_bookmarks=True,
                         timeout_seconds=self.watch_timeout, _preload_content=False,
                         _request_timeout=(self.api_timeout, self.watch_timeout + self.api_timeout))
        clean = False
        try:
            buf = b""
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._event(json.loads(line))
                if self.stop.is_set():
                    return
            clean = True
        finally:
            if clean:
                resp.release_conn()
            else:
                resp.close()

    def _event(self, event: dict) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise WatchError(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        self.metrics.watch_events.labels(self.resource, kind).inc()
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind != "BOOKMARK" and self.cache.apply(self.resource, kind, obj):
            self.metrics.objects.labels(self.resource).set(self.cache.counts()[self.resource])
            self.on_change()
        if version:
            self.version = version
