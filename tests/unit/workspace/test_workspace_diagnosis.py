"""Why inference is not up: the Ray pods' and Ray Serve's own words in InferenceReady."""

from __future__ import annotations

from controller.api.pod import Pod
from controller.api.rayservice import RayService
from controller.workspace.diagnosis import (
    REASON_POD_FAILING,
    REASON_SERVE_DEPLOYMENT,
    REASON_WORKERS_NOT_READY,
    cluster_pods,
    explain,
    pod_problem,
    serve_messages,
    worker_messages,
)
from controller.workspace.inference import InferenceState, rayservice_state

WAITING = InferenceState(False, "RayServiceNotReady", "waiting for KubeRay to start the Ray cluster")
SCHEDULE = ("Deployment 'LLMServer' in application 'llm' has 1 replicas that have taken more than 30s "
            "to be scheduled. Resources required for each replica: {\"GPU\": 1.0}, total resources "
            "available: {\"CPU\": 1.5}.")


def pod(name: str = "rs-abcde-head-x", node_type: str = "head", cluster: str = "rs-abcde", **status) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "labels": {
        "kaito.sh/workspace": "ws", "ray.io/node-type": node_type, "ray.io/cluster": cluster}},
        "status": status}


def container(name: str = "ray-head", waiting: dict | None = None, terminated: dict | None = None,
              last: dict | None = None) -> dict:
    state = {"waiting": waiting} if waiting else {"terminated": terminated} if terminated else {"running": {}}
    return {"name": name, "ready": False, "restartCount": 1, "state": state,
            **({"lastState": {"terminated": last}} if last else {})}


def rayservice(apps: dict, cluster: str = "rs-abcde", where: str = "activeServiceStatus") -> dict:
    return {"metadata": {"name": "rs", "namespace": "ns"},
            "spec": {"rayClusterConfig": {"headGroupSpec": {}}},
            "status": {where: {"rayClusterName": cluster, "applicationStatuses": apps}}}


def test_image_pull_failures_are_quoted() -> None:
    p = pod(containerStatuses=[container(waiting={"reason": "ImagePullBackOff",
                                                  "message": 'Back-off pulling image "nope:1"'})])
    problem = pod_problem(Pod.model_validate(p))
    assert problem is not None and problem.reason == "ImagePullBackOff"
    assert problem.message == ('pod rs-abcde-head-x container ray-head: ImagePullBackOff: '
                               'Back-off pulling image "nope:1"')
    state = explain(WAITING, None, [p])
    assert state.reason == "ImagePullBackOff" and not state.ready and not state.failed
    assert state.message.startswith("pod rs-abcde-head-x container ray-head: ImagePullBackOff")
    assert WAITING.message in state.message


def test_oom_killed_wins_over_its_crash_loop() -> None:
    c = container("ray-worker", waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"},
                  last={"reason": "OOMKilled", "exitCode": 137})
    problem = pod_problem(Pod.model_validate(pod("w", "worker", containerStatuses=[c])))
    assert problem is not None and problem.reason == "OOMKilled"
    assert "exit code 137" in problem.message and "CrashLoopBackOff: back-off 40s" in problem.message


def test_crash_loop_quotes_the_last_exit() -> None:
    c = container(waiting={"reason": "CrashLoopBackOff", "message": "back-off 10s"},
                  last={"reason": "Error", "exitCode": 1, "message": "ModuleNotFoundError: rayserve"})
    problem = pod_problem(Pod.model_validate(pod(containerStatuses=[c])))
    assert problem is not None and problem.reason == "CrashLoopBackOff"
    assert "last exit code 1: Error: ModuleNotFoundError: rayserve" in problem.message


def test_unschedulable_quotes_the_scheduler_and_ranks_first() -> None:
    sched = pod("w", "worker", phase="Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])
    pulling = pod(containerStatuses=[container(waiting={"reason": "ErrImagePull", "message": "not found"})])
    state = explain(WAITING, None, [pulling, sched])
    assert state.reason == "Unschedulable"
    assert state.message.startswith(
        "pod w: Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    assert "ErrImagePull: not found" in state.message


def test_what_is_on_its_way_or_running_is_no_problem() -> None:
    creating = pod(containerStatuses=[container(waiting={"reason": "ContainerCreating"})])
    running = pod(phase="Running", containerStatuses=[container()])
    assert pod_problem(Pod.model_validate(creating)) is None
    assert pod_problem(Pod.model_validate(running)) is None
    assert explain(WAITING, None, [creating, running]) == WAITING


def test_unknown_kubelet_reasons_keep_a_known_condition_reason() -> None:
    p = pod(initContainerStatuses=[container("puller-0", waiting={"reason": "Weird-Thing", "message": "x"})])
    problem = pod_problem(Pod.model_validate(p))
    assert problem is not None and problem.reason == REASON_POD_FAILING
    assert "container puller-0: Weird-Thing: x" in problem.message
    evicted = pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    assert pod_problem(Pod.model_validate(evicted)).reason == "Evicted"  # type: ignore[union-attr]


def test_serve_deployment_message_is_quoted() -> None:
    rs = rayservice({"llm": {"status": "DEPLOYING", "serveDeploymentStatuses": {
        "LLMServer": {"status": "UPDATING", "message": SCHEDULE}, "Ingress": {"status": "HEALTHY"}}}})
    assert serve_messages(RayService.model_validate(rs)) == [
        f"Ray Serve deployment llm/LLMServer UPDATING: {SCHEDULE}"]
    base = rayservice_state(rs)
    assert base.reason == "ServeDeploying"
    state = explain(base, rs, [])
    assert state.reason == REASON_SERVE_DEPLOYMENT and "total resources available" in state.message
    assert "llm=DEPLOYING" in state.message  # the RayService's own words stay, after Serve's


def test_running_apps_and_ready_states_are_left_alone() -> None:
    rs = rayservice({"llm": {"status": "RUNNING", "serveDeploymentStatuses": {
        "LLMServer": {"status": "UPSCALING", "message": "upscaling from 1 to 2"}}}})
    assert serve_messages(RayService.model_validate(rs)) == []
    ready = InferenceState(True, "InferenceReady", "ready")
    crashing = pod(containerStatuses=[container(waiting={"reason": "CrashLoopBackOff"})])
    assert explain(ready, rs, [crashing]) is ready


def test_failed_and_updating_states_keep_their_reason_but_say_more() -> None:
    failed = InferenceState(False, "ServeApplicationFailed", "Ray Serve application failed", failed=True)
    p = pod(containerStatuses=[container(waiting={"reason": "ErrImagePull", "message": "denied"})])
    out = explain(failed, None, [p])
    assert out.reason == "ServeApplicationFailed" and out.failed and "ErrImagePull: denied" in out.message
    updating = InferenceState(False, "RayServiceUpdating", "waiting for generation 2")
    assert explain(updating, None, [p]).reason == "RayServiceUpdating"


def test_only_the_clusters_the_rayservice_names_count() -> None:
    rs = RayService.model_validate(rayservice({}, cluster="rs-new"))
    old, new = pod("o", cluster="rs-old"), pod("n", cluster="rs-new")
    assert [p.name for p in cluster_pods([old, new], rs)] == ["n"]
    assert [p.name for p in cluster_pods([old, new], None)] == ["o", "n"]


def test_many_pods_are_counted_not_listed() -> None:
    pods = [pod(f"w{i}", "worker", containerStatuses=[container(waiting={"reason": "ErrImagePull"})])
            for i in range(5)]
    state = explain(WAITING, None, pods)
    assert state.message.count("ErrImagePull") == 3 and "and 2 more Ray pod(s) not running" in state.message


def test_a_lost_worker_of_the_serving_cluster_is_counted() -> None:
    """KubeRay's readyWorkerReplicas below desiredWorkerReplicas on the active cluster: a Ray node
    lost; on the pending cluster the workers are merely starting."""
    def with_workers(where: str, ready: int) -> dict:
        rs = rayservice({"llm": {"status": "UNHEALTHY"}}, where=where)
        rs["status"][where]["rayClusterStatus"] = {"desiredWorkerReplicas": 2, "readyWorkerReplicas": ready}
        return rs

    lost = with_workers("activeServiceStatus", 1)
    said = "Ray cluster rs-abcde: 1 of 2 worker pods ready"
    assert worker_messages(RayService.model_validate(lost)) == [said]
    state = explain(rayservice_state(lost), lost, [])
    assert state.reason == "ServeApplicationFailed" and state.message.startswith(said)
    waiting = explain(InferenceState(False, "ServeNotReady", "waiting"), lost, [])
    assert waiting.reason == REASON_WORKERS_NOT_READY
    assert worker_messages(RayService.model_validate(with_workers("activeServiceStatus", 2))) == []
    assert worker_messages(RayService.model_validate(with_workers("pendingServiceStatus", 0))) == []
