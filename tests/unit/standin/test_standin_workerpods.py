"""Which Ray worker nodes the stand-in runs for a RayService: KubeRay's rules for a worker Pod's
resources and our stand-in's rule for the Kubernetes node it lands on (workerpods.py)."""

from __future__ import annotations

from controller.api.workspace import Workspace
from controller.workspace.inference import build_rayservice
from controller.workspace.plan import Plan
from hack.kuberay_standin.workerpods import LABEL_K8S_NODE, LABEL_POD, label_value, worker_pods


def _node(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}}


def _rs(groups: list[dict]) -> dict:
    return {
        "metadata": {"name": "rs", "namespace": "ns"},
        "spec": {"rayClusterConfig": {"headGroupSpec": {}, "workerGroupSpecs": groups}},
    }


def _workspace() -> Workspace:
    return Workspace.model_validate(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "pp2", "namespace": "ns", "uid": "u1"},
            "resource": {
                "instanceType": "Standard_Fake_GPU",
                "labelSelector": {"matchLabels": {"apps": "pp2"}},
            },
            "inference": {"preset": {"name": "tiny-phi-3"}},
        }
    )


def test_the_workspace_rayservice_gets_one_node_per_gpu_node() -> None:
    plan = Plan(
        preset="tiny-phi-3",
        instance_type="Standard_Fake_GPU",
        node_count=2,
        gpus_per_node=1,
        pipeline_parallel=2,
        fake_gpu=True,
    )
    rs = build_rayservice(_workspace(), plan, "applications: []", "img")
    selector = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["nodeSelector"]
    nodes = [_node("n-b", **selector), _node("n-a", **selector), _node("other")]
    pods = worker_pods(rs, nodes)
    assert [(p.node, p.num_cpus, p.num_gpus) for p in pods] == [("n-a", 1, 1), ("n-b", 1, 1)]
    assert len({p.pod for p in pods}) == 2
    assert pods[0].labels == {LABEL_POD: pods[0].pod, LABEL_K8S_NODE: "n-a"}
    # one matching node only: the hostname anti-affinity leaves the second Pod Pending
    assert [p.node for p in worker_pods(rs, nodes[1:])] == ["n-a", None]


def test_resources_follow_kuberay() -> None:
    group = {
        "groupName": "g",
        "replicas": 5,
        "minReplicas": 1,
        "maxReplicas": 2,
        "rayStartParams": {"resources": '"{\\"TPU\\": 4}"'},
        "template": {
            "spec": {
                "containers": [
                    {
                        "resources": {
                            "requests": {"cpu": "500m"},
                            "limits": {"cpu": "2500m", "nvidia.com/gpu": "2"},
                        }
                    }
                ]
            }
        },
    }
    pods = worker_pods(_rs([group]), [_node("n")])
    assert len(pods) == 2  # replicas clamped to maxReplicas
    assert (pods[0].num_cpus, pods[0].num_gpus, pods[0].resources) == (3, 2, (("TPU", 4.0),))
    # rayStartParams win; with no Node at all the Pod stays Pending
    group = {
        "groupName": "g",
        "replicas": 1,
        "rayStartParams": {"num-cpus": "4", "num-gpus": "0"},
        "template": {},
    }
    (pod,) = worker_pods(_rs([group]), [])
    assert (pod.node, pod.num_cpus, pod.num_gpus) == (None, 4, 0)


def test_long_names_make_valid_label_values() -> None:
    long = "x" * 80
    assert len(label_value(long)) == 63 and label_value(long) != label_value("x" * 81)
    assert label_value("short") == "short"
