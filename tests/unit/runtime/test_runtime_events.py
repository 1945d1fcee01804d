"""What an Event is about: an ObjectReference, or the dict it is read from (no server; the writing
and aggregation are tested against a real API server in tests/integration/runtime)."""

from __future__ import annotations

from controller.runtime.events import EventRecorder, ObjectReference

OBJ = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "phi", "namespace": "ns", "uid": "u1", "resourceVersion": "7", "labels": {"a": "b"}},
}


def test_a_reference_and_its_dict_make_the_same_event() -> None:
    ref = ObjectReference.from_object(OBJ)
    assert ref == ObjectReference(kind="Workspace", name="phi", namespace="ns", uid="u1",
                                  api_version="kaito.sh/v1beta1", resource_version="7")
    assert ref.to_k8s() == {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "name": "phi",
                            "namespace": "ns", "uid": "u1", "resourceVersion": "7"}
    recorder = EventRecorder(None, "test", host="h")  # type: ignore[arg-type]
    event = recorder._new_event(ref, "ns", "Normal", "Created", "made it")
    assert event["involvedObject"] == ref.to_k8s()
    assert event["metadata"]["name"].startswith("phi.")
    assert event["source"] == {"component": "test", "host": "h"}


def test_unset_fields_are_left_out_and_recording_never_raises() -> None:
    cluster_scoped = ObjectReference(kind="Machine", name="m-0")
    assert cluster_scoped.to_k8s() == {"kind": "Machine", "name": "m-0"}
    # a client that fails (here: none at all) costs the Event, not the caller
    assert EventRecorder(None, "test").event(cluster_scoped, "Warning", "X", "y") is None  # type: ignore[arg-type]
