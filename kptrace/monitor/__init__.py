"""``kptrace monitor``: drift checks all the time, as metrics.

The pieces, each a module, data flowing one way:

* :mod:`~kptrace.monitor.cache` holds the cluster state: Services, EndpointSlices and Nodes, kept
  current by :mod:`~kptrace.monitor.watch` (list, then the watch API from the list's resourceVersion,
  with bookmarks; a relist on 410 Gone; backoff on errors), or read from a ``--cluster-state`` file
  again whenever it changes.
* :mod:`~kptrace.monitor.rules` says which nodes' rules to read and how: files (``--dump``,
  ``--bundle``, re-read when they change), this machine (``--local``: the DaemonSet), SSH, or the
  kube-proxy pods through the API (``--node``/``--all-nodes``: the Deployment).
* :mod:`~kptrace.monitor.run` checks each node with :func:`kptrace.checks.drift.check_node` (every
  proxy mode) on an interval and after a relevant change, and reports to
  :mod:`~kptrace.monitor.metrics` (prometheus_client: ``/metrics``, ``/healthz``, ``/readyz``) and
  :mod:`~kptrace.monitor.log` (JSON lines on stderr).

``kubernetes`` is imported only by :mod:`~kptrace.monitor.watch` (and the kube source it reuses),
``prometheus_client`` only by :mod:`~kptrace.monitor.metrics`: ``kptrace --help`` loads neither.
"""
