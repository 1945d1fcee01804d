"""A catalogue of bad Workspaces through the real kube-apiserver with the controller's webhook registered.

Every entry must end in a clear answer a person can act on: either a rejection (the CRD schema, a CEL
rule, the API server's own checks or the admission webhook) whose message names the problem, or,
for what admission lets through, a status condition saying what is wrong. Objects stored while no
webhook was registered (an older operator, a failurePolicy of Ignore) must get a status message
too. None may crash, hang or wedge a worker: afterwards the controller is healthy, has never
restarted, and reconciles a good Workspace.
"""

from __future__ import annotations

import copy
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from chaos_helpers import Bed

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.runtime import ApiError, Client
from controller.workspace import names
from hack.bench.controller_harness import (
    ensure_namespace,
    start_controller,
    start_provisioner,
    wait_for,
    workspace_manifest,
)

pytestmark = pytest.mark.integration


def ws(name: str = "bad", **kw: Any) -> dict:
    obj = workspace_manifest(name, **kw)
    obj.update(apiVersion="kaito.sh/v1beta1", kind="Workspace")
    return obj


def edit(obj: dict, path: str, value: Any) -> dict:
    """A copy of ``obj`` with ``path`` ("a.b.0.c"; value DELETE removes it) set."""
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    cur: Any = out
    for p in parents:
        cur = cur[int(p)] if isinstance(cur, list) else cur.setdefault(p, {})
    if value is DELETE:
        del cur[last]
    elif isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return out


DELETE = object()
HUGE = "x" * 300_000
ADAPTER = {"source": {"name": "a1", "image": "registry.example.com/adapters/a1:1"}, "strength": "0.5"}
TUNING = {
    "preset": {"name": "phi-3-mini-128k-instruct"},
    "method": "qlora",
    "input": {"urls": ["https://example.com/data.parquet"]},
    "output": {"image": "registry.example.com/out:1", "imagePushSecret": "push"},
}

# the operator's data-source settings this bed runs with (issue 11, item 2): narrower than the
# defaults, so a case the defaults admit shows the flags reach the webhook and the reconciler
SETTINGS = ("--allowed-csi-drivers", "file.csi.azure.com", "--node-path-prefix", "/var/lib/kaito-py/data/")

# (id, object, substrings the rejection message must contain)
REJECTED: list[tuple[str, dict, list[str]]] = [
    ("unknown preset", ws(preset="phi-9-ultra"), ["inference.preset.name", "phi-9-ultra"]),
    ("unknown instance type", ws(instance_type="Standard_Imaginary_v9"),
     ["resource.instanceType", "Standard_Imaginary_v9"]),
    ("model too big for the SKU", ws(preset="llama-3.1-70b-instruct", instance_type="Standard_NC4as_T4_v3"),
     ["resource.instanceType"]),
    ("count zero", edit(ws(), "resource.count", 0), ["resource.count", "greater than or equal to 1"]),
    ("count negative", edit(ws(), "resource.count", -3), ["resource.count"]),
    ("count absurd", edit(ws(), "resource.count", 2**40), ["resource.count", "at most"]),
    ("count wrong type", edit(ws(), "resource.count", "three"), ["resource.count", "integer"]),
    ("count float", edit(ws(), "resource.count", 1.5), ["resource.count", "integer"]),
    ("resource missing", edit(ws(), "resource", DELETE), ["resource", "Required"]),
    ("resource typo is pruned, then missing", edit(edit(ws(), "resource", DELETE), "resorce", {"count": 1}),
     ["resource", "Required"]),
    ("labelSelector wrong type", edit(ws(), "resource.labelSelector", "apps=x"),
     ["labelSelector", "object"]),
    ("inference wrong type", edit(ws(), "inference", ["phi"]), ["inference", "object"]),
    ("neither inference nor tuning", edit(ws(), "inference", DELETE), ["inference or tuning"]),
    ("both inference and tuning", edit(ws(instance_type="Standard_NC24ads_A100_v4"), "tuning", TUNING),
     ["exactly one of inference or tuning"]),
    ("preset and template", edit(ws(), "inference.template", {"spec": {"containers": []}}),
     ["exactly one of inference.preset or inference.template"]),
    ("name too long for a RayService", ws("a" * 60), ["metadata.name", "at most 47"]),
    ("name not DNS", ws("Bad_Name"), ["metadata.name"]),
    ("huge preset name", ws(preset="p" * 10_000), ["inference.preset.name", "Too long"]),
    ("huge annotation", edit(ws(), "metadata.annotations", {"note": HUGE}),
     ["metadata.annotations", "Too long"]),
    ("huge instance type", ws(instance_type="S" * 5_000), ["resource.instanceType", "Too long"]),
    ("adapter strength out of range", edit(ws(adapters=[ADAPTER]), "inference.adapters.0.strength", "2.5"),
     ["inference.adapters[0].strength", "between 0 and 1"]),
    ("adapter strength not a number", edit(ws(adapters=[ADAPTER]), "inference.adapters.0.strength", "lots"),
     ["inference.adapters[0].strength"]),
    ("adapter with no source", edit(ws(adapters=[ADAPTER]), "inference.adapters.0.source.image", DELETE),
     ["inference.adapters[0].source", "exactly one of"]),
    ("adapter from a URL", edit(ws(adapters=[ADAPTER]), "inference.adapters.0.source.urls", ["http://x/a"]),
     ["URLs are not supported"]),
    ("adapter name invalid", edit(ws(adapters=[ADAPTER]), "inference.adapters.0.source.name", "Not_DNS"),
     ["inference.adapters[0].source.name"]),
    ("duplicate adapters", ws(adapters=[ADAPTER, ADAPTER]), ["unique"]),
    ("too many adapters",
     ws(adapters=[edit(ADAPTER, "source.name", f"a{i}") for i in range(11)]), ["adapters", "10"]),
    ("tuning on 3 nodes", edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"),
                               "resource.count", 3), ["resource.count", "single node"]),
    ("tuning data from the metadata endpoint",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"), "tuning.input.urls",
          ["http://169.254.169.254/latest/meta-data"]), ["tuning.input.urls[0]", "private, local"]),
    ("tuning data from 127.0.0.1 spelled as a number",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"), "tuning.input.urls",
          ["http://2130706433/data.jsonl"]), ["tuning.input.urls[0]", "(127.0.0.1)"]),
    ("tuning data from the Azure WireServer",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"), "tuning.input.urls",
          ["http://168.63.129.16/machine.jsonl"]), ["tuning.input.urls[0]", "cloud-internal"]),
    ("node label kubernetes.io/hostname",
     edit(ws(), "resource.labelSelector.matchLabels", {"kubernetes.io/hostname": "victim"}),
     ["resource.labelSelector.matchLabels", "kubernetes.io/hostname", "restricted domain"]),
    ("node label node-restriction.kubernetes.io",
     edit(ws(), "resource.labelSelector.matchLabels", {"node-restriction.kubernetes.io/tenant": "a"}),
     ["resource.labelSelector.matchLabels", "restricted domain"]),
    ("node label karpenter.sh",
     edit(ws(), "resource.labelSelector.matchLabels", {"karpenter.sh/nodepool": "x"}),
     ["resource.labelSelector.matchLabels", "karpenter.sh"]),
    ("node label k8s.io subdomain",
     edit(ws(), "resource.labelSelector.matchLabels", {"kops.k8s.io/instancegroup": "x"}),
     ["resource.labelSelector.matchLabels", "k8s.io"]),
    ("node label bad syntax", edit(ws(), "resource.labelSelector.matchLabels", {"bad key": "white space"}),
     ["resource.labelSelector.matchLabels", "label key"]),
    ("adapter mounts a hostPath",
     edit(edit(ws(adapters=[ADAPTER]), "inference.adapters.0.source.image", DELETE),
          "inference.adapters.0.source.volumeSource", {"hostPath": {"path": "/"}}),
     ["inference.adapters[0].source.volumeSource", "'hostPath' is not allowed"]),
    ("adapter volume renames itself",
     edit(edit(ws(adapters=[ADAPTER]), "inference.adapters.0.source.image", DELETE),
          "inference.adapters.0.source.volumeSource", {"name": "model", "emptyDir": {}}),
     ["inference.adapters[0].source.volumeSource", "exactly one volume type"]),
    ("adapter from the node's root",
     edit(edit(ws(adapters=[ADAPTER]), "inference.adapters.0.source.image", DELETE),
          "inference.adapters.0.source.path", "/"), ["inference.adapters[0].source.path", "not under"]),
    ("tuning data from an NFS share",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"), "tuning.input",
          {"volumeSource": {"nfs": {"server": "10.0.0.9", "path": "/"}}}),
     ["tuning.input.volumeSource", "'nfs' is not allowed"]),
    ("tuning data from a CSI driver not allowed",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"), "tuning.input",
          {"volumeSource": {"csi": {"driver": "secrets-store.csi.k8s.io"}}}),
     ["tuning.input.volumeSource", "CSI driver"]),
    ("tuning data from a CSI driver this operator's --allowed-csi-drivers leaves out",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"), "tuning.input",
          {"volumeSource": {"csi": {"driver": "blob.csi.azure.com"}}}),
     ["tuning.input.volumeSource",
      "CSI driver 'blob.csi.azure.com' is not allowed: use one of file.csi.azure.com"]),
    ("adapter from a node path outside this operator's --node-path-prefix",
     edit(edit(ws(adapters=[ADAPTER]), "inference.adapters.0.source.image", DELETE),
          "inference.adapters.0.source.path", "/var/lib/kaito-py/adapters/a1"),
     ["inference.adapters[0].source.path", "not under /var/lib/kaito-py/data/"]),
    ("tuning output into /etc of the node",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"), "tuning.output",
          {"path": "/etc"}), ["tuning.output.path", "not under"]),
    ("tuning with too many URLs",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"), "tuning.input.urls",
          [f"https://example.com/{i}.jsonl" for i in range(65)]), ["tuning.input.urls", "at most 64"]),
    ("tuning URL too long",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"), "tuning.input.urls",
          ["https://example.com/" + "u" * 3000]), ["tuning.input.urls[0]", "Too long"]),
    ("too many preferred nodes", edit(ws(), "resource.preferredNodes", [f"n{i}" for i in range(101)]),
     ["resource.preferredNodes", "at most 100"]),
    ("too many node labels",
     edit(ws(), "resource.labelSelector.matchLabels", {f"l{i}": "v" for i in range(65)}),
     ["resource.labelSelector.matchLabels", "at most 64"]),
    ("too many pull secrets",
     edit(ws(adapters=[ADAPTER]), "inference.adapters.0.source.imagePullSecrets",
          [f"s{i}" for i in range(17)]),
     ["imagePullSecrets", "at most 16"]),
    ("adapter pull secret without an image",
     edit(edit(edit(ws(adapters=[ADAPTER]), "inference.adapters.0.source.image", DELETE),
               "inference.adapters.0.source.volumeSource", {"emptyDir": {}}),
          "inference.adapters.0.source.imagePullSecrets", ["reg"]),
     ["inference.adapters[0].source.imagePullSecrets", "only used with image"]),
    ("API key Secret not a name", edit(ws(), "inference.apiKeySecret", "Not A Secret"),
     ["inference.apiKeySecret"]),
    ("tuning push without secret",
     edit(ws("tune", tuning=TUNING, instance_type="Standard_NC24ads_A100_v4"),
          "tuning.output.imagePushSecret", DELETE), ["imagePushSecret"]),
]

# immutable edits of an admitted Workspace "good": (id, path, value, substrings)
IMMUTABLE: list[tuple[str, str, Any, list[str]]] = [
    ("instanceType", "resource.instanceType", "Standard_NC24s_v3", ["resource.instanceType", "immutable"]),
    ("preset", "inference.preset.name", "mistral-7b-instruct", ["immutable"]),
    ("labelSelector", "resource.labelSelector", {"matchLabels": {"apps": "other"}},
     ["resource.labelSelector", "immutable"]),
    ("inference -> tuning", "inference", DELETE, ["inference"]),
]


def _raw_post(bed: Bed, ns: str, body: bytes) -> tuple[int, str]:
    """POST bytes that are not JSON (what a mangled YAML->JSON conversion sends)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(
        f"{bed.cp.url}/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces", data=body, method="POST",
        headers={"Authorization": f"Bearer {bed.cp.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def conds(bed: Bed, ns: str, name: str) -> dict[str, dict]:
    obj = bed.client.get(WORKSPACES, name, ns)
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _update_latest(client: Client, ns: str, name: str, path: str, value: Any) -> None:
    """Apply one edit to the newest copy, re-reading on 409: the controller writes the same object
    (finalizer, status) while the test edits it, and a conflict says nothing about admission."""
    for _ in range(10):
        changed = edit(client.get(WORKSPACES, name, ns), path, value)
        if path == "inference":
            changed["tuning"] = TUNING
        try:
            client.update(WORKSPACES, changed)
            return
        except ApiError as exc:
            if exc.status != 409:
                raise
    raise AssertionError(f"{name}: still conflicting after 10 tries")


def test_bad_input_catalogue(bed: Bed) -> None:
    client = bed.client
    ns = ensure_namespace(client, "chaos-input")
    bed.track(start_provisioner(bed.cp, bed.workdir))
    kuberay = bed.start_kuberay()

    # stored before any webhook existed: the reconciler must answer in status, not crash or loop
    unguarded = {
        "old-unknown-preset": (edit(ws("old-unknown-preset"), "inference.preset.name", "phi-9-ultra"),
                               ["phi-9-ultra"]),
        "old-absurd-count": (edit(ws("old-absurd-count"), "resource.count", 2**40), ["resource.count"]),
        "old-node-label": (edit(ws("old-node-label"), "resource.labelSelector.matchLabels",
                                {"kubernetes.io/hostname": "victim"}), ["kubernetes.io/hostname"]),
        "old-host-adapter": (edit(edit(ws("old-host-adapter", adapters=[ADAPTER]),
                                       "inference.adapters.0.source.image", DELETE),
                                  "inference.adapters.0.source.path", "/"), ["source.path"]),
        "old-template": (edit(edit(ws("old-template"), "inference.preset", DELETE), "inference.template",
                              {"spec": {"containers": [{"name": "x", "image": "x"}]}}), ["template"]),
        # admitted by the built-in rules, not by this operator's --node-path-prefix
        "old-outside-prefix": (edit(edit(ws("old-outside-prefix", adapters=[ADAPTER]),
                                         "inference.adapters.0.source.image", DELETE),
                                    "inference.adapters.0.source.path", "/var/lib/kaito-py/adapters/a1"),
                               ["not under /var/lib/kaito-py/data/"]),
    }
    for obj, _ in unguarded.values():
        client.create(WORKSPACES, obj, ns)

    ctrl = bed.track(start_controller(bed.cp, bed.workdir, webhook=True, log_level="INFO",
                                      extra_args=SETTINGS))

    # a good one first, for the immutable edits and an "adapter pointing nowhere"
    client.create(WORKSPACES, ws("good"), ns)
    nowhere = ws("nowhere", adapters=[edit(ADAPTER, "source.image", "registry.invalid/no/such:adapter")])
    kuberay.hold.add(f"{ns}/{names.rayservice_name('nowhere')}")
    client.create(WORKSPACES, nowhere, ns)

    failures = []
    for case, obj, needles in REJECTED:
        try:
            client.create(WORKSPACES, obj, ns)
        except ApiError as exc:
            missing = [n for n in needles if n not in exc.message]
            if missing:
                failures.append(f"{case}: message lacks {missing}: {exc.message[:300]}")
            if exc.status >= 500:
                failures.append(f"{case}: server error {exc.status}: {exc.message[:300]}")
        else:
            failures.append(f"{case}: was admitted")
            client.delete(WORKSPACES, obj["metadata"]["name"], ns)

    status, text = _raw_post(bed, ns, b"resource: {instanceType: [unterminated")
    if not (400 <= status < 500 and "json" in text.lower()):
        failures.append(f"malformed body: {status} {text[:200]}")

    good = wait_for(lambda: client.get(WORKSPACES, "good", ns)["metadata"].get("finalizers"), 30, "good seen")
    assert good
    for case, path, value, needles in IMMUTABLE:
        try:
            _update_latest(client, ns, "good", path, value)
        except ApiError as exc:
            missing = [n for n in needles if n not in exc.message]
            if missing:
                failures.append(f"immutable {case}: message lacks {missing}: {exc.message[:300]}")
        else:
            failures.append(f"immutable {case}: update was admitted")
    assert not failures, "\n".join(failures)

    # what admission could not stop gets a status message
    for name, (_, needles) in unguarded.items():
        rr = wait_for(lambda n=name: conds(bed, ns, n).get("ResourceReady"), 60, f"{name} status")
        assert rr["status"] == "False", (name, rr)
        assert all(n in rr["message"] for n in needles), (name, rr["message"])

    # an adapter image that does not exist is a serving failure: KubeRay reports the Serve app failed
    rs_name = names.rayservice_name("nowhere")
    wait_for(lambda: client.get(RAYSERVICES, rs_name, ns), 60, "RayService of 'nowhere'")
    msg = "Failed to pull adapter image registry.invalid/no/such:adapter: not found"
    client.patch(RAYSERVICES, rs_name, {"status": {"activeServiceStatus": {"applicationStatuses": {
        "llm": {"status": "DEPLOY_FAILED", "message": msg}}}}}, namespace=ns, subresource="status")
    inf = wait_for(lambda: (c := conds(bed, ns, "nowhere").get("InferenceReady")) and c["status"] == "False"
                   and c["reason"] == "ServeApplicationFailed" and c, 60, "nowhere's InferenceReady")
    assert "registry.invalid/no/such:adapter" in inf["message"]

    # nothing crashed or wedged: same process, healthy, and a new good Workspace goes Ready, even
    # with a launch record (controller/workspace/relaunch.py) someone wrote garbage into
    garbage = edit(ws("good-after"), "metadata.annotations",
                   {"kaito.sh/node-launches": '{"launches": {"x": "lots"}, "noticed": "soon"'})
    client.create(WORKSPACES, garbage, ns)
    wait_for(lambda: conds(bed, ns, "good-after").get("WorkspaceReady", {}).get("status") == "True", 60,
             "a good Workspace Ready after the catalogue")
    assert ctrl.mp.running and ctrl.healthy()
    assert "Traceback" not in ctrl.mp.log_path.read_text()
    print(f"{len(REJECTED) + 1} rejected creates, {len(IMMUTABLE)} rejected immutable edits, "
          f"{len(unguarded)} unguarded objects and 1 unreachable adapter answered in status; "
          f"controller healthy (json: {json.dumps(sorted(unguarded))})")
