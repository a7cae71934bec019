"""The cluster state for drift: the real ``kubernetes`` client against the stand-in API server
(tests/kubeapi_standin.py) serving recorded Services, EndpointSlices and Nodes, with faults injected
per path. No root, no network namespaces."""

from __future__ import annotations

import time

import pytest
from kubeapi_standin import StandIn

from kptrace.errors import EXIT_ENVIRONMENT, EnvironmentProblem
from kptrace.sources.kube import fetch_cluster_state

SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
NODES = "/api/v1/nodes"


def service(i: int) -> dict:
    name, ns = f"svc-{i:05d}", f"ns-{i % 17:02d}"
    ip = f"10.96.{i // 250}.{i % 250 + 1}"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "uid": f"00000000-0000-0000-0000-{i:012d}",
                         "resourceVersion": str(500 + i), "creationTimestamp": "2024-05-01T10:00:00Z", "labels": {"app": name}},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
                     "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster", "sessionAffinity": "None",
                     "selector": {"app": name}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
            "status": {"loadBalancer": {}}}


def endpoint_slice(i: int, endpoints: int = 3) -> dict:
    svc = service(i)["metadata"]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{svc['name']}-x{i:05d}", "namespace": svc["namespace"], "resourceVersion": str(20000 + i),
                         "labels": {"kubernetes.io/service-name": svc["name"],
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc["name"], "uid": svc["uid"],
                                              "controller": True, "blockOwnerDeletion": True}]},
            "endpoints": [{"addresses": [f"10.{64 + (i * endpoints + e) // 65536}.{(i * endpoints + e) // 256 % 256}.{(i * endpoints + e) % 256}"],
                           "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": f"node{e % 3 + 1}", "zone": "zone-a",
                           "targetRef": {"kind": "Pod", "namespace": svc["namespace"], "name": f"{svc['name']}-pod-{e}"}}
                          for e in range(endpoints)],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def node(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"node{i}", "labels": {"kubernetes.io/hostname": f"node{i}"}},
            "spec": {"podCIDR": f"10.244.{i}.0/24", "podCIDRs": [f"10.244.{i}.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": f"10.240.0.{10 + i}"},
                                     {"type": "Hostname", "address": f"node{i}"}]}}


def cluster(services: int = 5, slices: int = 5, nodes: int = 3) -> list[dict]:
    return ([service(i) for i in range(services)] + [endpoint_slice(i) for i in range(slices)]
            + [node(i) for i in range(1, nodes + 1)])


def in_list_order(objects: list[dict]) -> list[dict]:
    """What the API lists, in kubectl's order: Services, EndpointSlices, Nodes, each by namespace and name."""
    def order(kind):
        return sorted((o for o in objects if o["kind"] == kind),
                      key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    return order("Service") + order("EndpointSlice") + order("Node")


def fetch_error(api: StandIn, tmp_path, **kw) -> EnvironmentProblem:
    with pytest.raises(EnvironmentProblem) as caught:
        fetch_cluster_state(api.kubeconfig(tmp_path / "kc"), **kw)
    assert caught.value.exit_code == EXIT_ENVIRONMENT
    return caught.value


def test_every_item_arrives_across_pages(tmp_path):
    objects = cluster(services=1234, slices=345, nodes=3)
    with StandIn(objects=objects) as api:
        state = fetch_cluster_state(api.kubeconfig(tmp_path / "kc"), page_size=100)
    assert state["items"] == in_list_order(objects)
    pages = api.queries(SERVICES)
    assert len(pages) == 13  # 1,234 Services in pages of 100
    assert all(q["limit"] == ["100"] for q in pages)
    assert "continue" not in pages[0] and all(q.get("continue") for q in pages[1:])
    assert len({q["continue"][0] for q in pages[1:]}) == 12
    assert len(api.queries(SLICES)) == 4 and len(api.queries(NODES)) == 1


def test_the_result_is_what_kubectl_prints(tmp_path):
    objects = cluster()
    with StandIn(objects=objects) as api:
        state = fetch_cluster_state(api.kubeconfig(tmp_path / "kc"), context="standin")
    assert state["apiVersion"] == "v1" and state["kind"] == "List"
    assert state["metadata"] == {"resourceVersion": "",
                                 "kptrace/resourceVersions": {"services": "1000", "endpointslices": "1001", "nodes": "1002"}}
    kinds = {(o["kind"], o["apiVersion"]) for o in state["items"]}
    assert kinds == {("Service", "v1"), ("EndpointSlice", "discovery.k8s.io/v1"), ("Node", "v1")}
    assert all(list(o)[:2] == ["apiVersion", "kind"] for o in state["items"])  # kubectl's key order
    assert state["items"] == in_list_order(objects)


def test_an_expired_continue_token_relists_from_the_start(tmp_path):
    with StandIn(objects=cluster(services=250)) as api:
        api.expire_continue(SERVICES)
        state = fetch_cluster_state(api.kubeconfig(tmp_path / "kc"), page_size=100)
    names = [o["metadata"]["name"] for o in state["items"] if o["kind"] == "Service"]
    assert len(names) == 250 and len(set(names)) == 250  # the pages before the expiry are not kept twice
    tokens = [bool(q.get("continue")) for q in api.queries(SERVICES)]
    assert tokens == [False, True, False, True, True]
    assert state["metadata"]["kptrace/resourceVersions"]["services"] == "1001"  # the relist's snapshot, not the first


def test_a_continue_token_that_expires_again_is_a_clear_error(tmp_path):
    with StandIn(objects=cluster(services=250)) as api:
        api.expire_continue(SERVICES, times=2)
        error = fetch_error(api, tmp_path, page_size=100)
    assert "listing services" in error.message and "expired" in error.message and "410" in error.message
    assert len(api.queries(SERVICES)) == 4  # one relist, no more


@pytest.mark.parametrize("path, permission", [
    (SERVICES, "list services"),
    (SLICES, "list endpointslices (discovery.k8s.io"),
    (NODES, "list nodes"),
])
def test_forbidden_names_the_missing_permission_and_the_rbac_file(tmp_path, path, permission):
    with StandIn(objects=cluster()) as api:
        api.fail(path, 403)
        error = fetch_error(api, tmp_path)
    assert "forbidden" in error.message and permission in error.message
    assert "cannot list resource" in error.message  # the API server's own words are kept
    assert "deploy/rbac.yaml" in error.hint and "kptrace-drift" in error.hint
    assert "Traceback" not in error.render()


def test_unauthorized_is_a_clear_error(tmp_path):
    with StandIn(objects=cluster()) as api:
        api.fail(SERVICES, 401)
        error = fetch_error(api, tmp_path)
    assert "unauthorized" in error.message and "credentials" in error.message


def test_no_endpointslice_api_says_the_cluster_is_too_old(tmp_path):
    with StandIn(objects=cluster()) as api:
        api.fail(SLICES, 404)
        error = fetch_error(api, tmp_path)
    assert "the API server has no discovery.k8s.io/v1 EndpointSlices (Kubernetes older than 1.21)" in error.message


def test_a_server_error_twice_is_retried(tmp_path):
    objects = cluster()
    with StandIn(objects=objects) as api:
        api.fail(SERVICES, 500, times=2)
        state = fetch_cluster_state(api.kubeconfig(tmp_path / "kc"))
    assert state["items"] == in_list_order(objects)
    assert len(api.queries(SERVICES)) == 3


def test_a_server_error_that_persists_is_a_clear_error(tmp_path):
    with StandIn(objects=cluster()) as api:
        api.fail(SLICES, 503, message="etcd cluster is unavailable")
        error = fetch_error(api, tmp_path)
    assert "listing endpointslices" in error.message and "503" in error.message
    assert "etcd cluster is unavailable" in error.message and "after 3 attempts" in error.message
    assert len(api.queries(SLICES)) == 3


def test_an_api_slower_than_the_timeout_is_a_clear_error_at_once(tmp_path):
    with StandIn(objects=cluster()) as api:
        api.delay(NODES, 30)
        started = time.monotonic()
        error = fetch_error(api, tmp_path, timeout=1.0)
        elapsed = time.monotonic() - started
    assert f"cannot reach the Kubernetes API at http://127.0.0.1:{api.port}" in error.message
    assert "no answer within 1 s" in error.message and "listing nodes" in error.message
    assert len(api.queries(NODES)) == 1  # not sent again: each resend would wait the whole timeout
    assert elapsed < 10


def test_a_closed_port_is_a_clear_error(tmp_path):
    with StandIn(objects=cluster()) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kc")
    with pytest.raises(EnvironmentProblem) as caught:
        fetch_cluster_state(kubeconfig)
    assert f"cannot reach the Kubernetes API at http://127.0.0.1:{api.port}" in caught.value.message
    assert "Connection refused" in caught.value.message


def test_no_kubeconfig_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(EnvironmentProblem) as caught:
        fetch_cluster_state(str(tmp_path / "missing"))
    assert "no usable kubeconfig" in caught.value.message and "--kubeconfig" in caught.value.hint


def test_ten_thousand_services_and_a_hundred_thousand_endpoints(tmp_path):
    objects = [service(i) for i in range(10_000)] + [endpoint_slice(i, endpoints=10) for i in range(10_000)] + [node(1)]
    with StandIn(objects=objects) as api:
        started = time.monotonic()
        state = fetch_cluster_state(api.kubeconfig(tmp_path / "kc"), page_size=500)
        elapsed = time.monotonic() - started
    endpoints = sum(len(o["endpoints"]) for o in state["items"] if o["kind"] == "EndpointSlice")
    print(f"\n10,000 Services + 10,000 EndpointSlices ({endpoints:,} endpoints), pages of 500: {elapsed:.2f} s")
    assert len(state["items"]) == 20_001 and endpoints == 100_000
    assert len(api.queries(SERVICES)) == 20 and len(api.queries(SLICES)) == 20


# ---------------------------------------------------------------- a cluster state from a file, as pasted (issue 12)

def _state_text(objects: list[dict]) -> str:
    import json

    return json.dumps({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": objects}, indent=4)


def _refused(text: str, source: str = "state.json"):
    from kptrace.errors import ParseError, format_diagnostic
    from kptrace.parsers.cluster_state import parse_cluster_state

    with pytest.raises(ParseError) as caught:
        parse_cluster_state(text, source)
    d = caught.value.diagnostics[0]
    rendered = format_diagnostic(d)
    assert "Error:" not in rendered and "Traceback" not in rendered and "^" in rendered
    return d


@pytest.mark.parametrize("item,change,message,at", [
    (2, lambda o: o["metadata"].pop("name"), "item 3 (kind Service): metadata.name is missing", '    "metadata": {'),
    (0, lambda o: o["spec"]["ports"][0].pop("port"), "item 1 (kind Service 'svc-00000'): spec.ports[0].port is missing",
     '{'),
    (0, lambda o: o["spec"]["ports"][0].update(port="http"), "spec.ports[0].port is not a number ('http')", '"port": "http"'),
    (0, lambda o: o.update(spec=["not", "a", "mapping"]), "item 1 (kind Service 'svc-00000'): spec is not a mapping (a list)", '"spec": ['),
    (3, lambda o: o["endpoints"][0].update(addresses="10.64.0.3"), "endpoints[0].addresses is not a list (a string)", '"addresses": "10.64.0.3"'),
    (5, lambda o: o["metadata"].pop("name"), "item 6 (kind Node): metadata.name is missing", '"metadata": {'),
])
def test_a_malformed_item_is_refused_at_its_place_never_with_a_python_error(item, change, message, at):
    objects = cluster(services=3, slices=2, nodes=1)
    change(objects[item])
    text = _state_text(objects)
    d = _refused(text)
    assert message in d.message, d.message
    assert at.strip() in d.text and d.text == text.split("\n")[d.line - 1] and d.col >= 1
    # the same in YAML: at the same item
    import yaml

    d = _refused(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objects}), "state.yaml")
    assert message in d.message and d.line >= 1


def test_a_cluster_state_pasted_with_its_prompt_in_a_fence_with_crlf():
    from kptrace.parsers.cluster_state import parse_cluster_state

    text = "```json\r\n$ kubectl get svc,endpointslices,nodes -A -o json\r\n" + _state_text(cluster(2, 2, 1)).replace("\n", "\r\n") + "\r\n```\r\n$ "
    state = parse_cluster_state(text, "paste.txt")
    assert (len(state.services), len(state.slices), len(state.nodes)) == (2, 2, 1)
    # an error in it is still at the pasted file's own line
    broken = text.replace('"port": 80', '"port": 80,,', 1)
    d = _refused(broken, "paste.txt")
    assert d.message.startswith("not valid JSON") and broken.split("\r\n")[d.line - 1].strip().startswith('"port": 80,,')


def test_mangled_cluster_states_give_kptrace_errors_only():
    """Fields dropped, retyped or nulled anywhere in a real state: a state or a KptraceError, nothing else."""
    import json
    import random

    from kptrace.errors import KptraceError
    from kptrace.parsers.cluster_state import parse_cluster_state

    rng = random.Random(12)
    base = cluster(3, 3, 2)
    for _ in range(300):
        objects = json.loads(json.dumps(base))
        target = rng.choice(objects)
        for _ in range(rng.randrange(1, 4)):
            node_, key = target, None
            while isinstance(node_, (dict, list)) and node_ and rng.random() < 0.7:
                key = rng.choice(list(node_)) if isinstance(node_, dict) else rng.randrange(len(node_))
                parent, node_ = node_, node_[key]
            if key is None:
                continue
            parent[key] = rng.choice([None, 7, "x", [], {}, True, [1], {"a": 1}, -1, "10.0.0.1"])
        try:
            parse_cluster_state(_state_text(objects), "m.json")
        except KptraceError as e:
            assert not any(f"{k}Error" in e.render() for k in ("Key", "Type", "Value", "Attribute", "Index")), e.render()
