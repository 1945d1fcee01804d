"""One mapping from a data source to a pod's volumes, mounts and init containers (adapters and
tuning inputs alike), and what a workspace may mount at all (controller.api.datasources)."""

from __future__ import annotations

from controller.api.workspace import DataSource
from controller.workspace.volumes import PodData


def test_each_kind_of_source_lands_the_same_way_for_every_pod() -> None:
    data = PodData()
    assert data.add_source(DataSource(volume_source={"persistentVolumeClaim": {"claimName": "c"}}),
                           "v", "/mnt/v", "pull-v", mark_copy=True)
    assert data.add_source(DataSource(path="/var/lib/kaito-py/d"), "p", "/mnt/p", "pull-p", mark_copy=True)
    assert data.add_source(DataSource(image="reg/d:1"), "i", "/mnt/i", "pull-i", mark_copy=True)
    assert not data.add_source(DataSource(urls=["https://example.com/d.jsonl"]), "u", "/mnt/u", "pull-u",
                               mark_copy=True)  # the process fetches URLs itself
    assert data.volumes == [
        {"persistentVolumeClaim": {"claimName": "c"}, "name": "v"},
        {"name": "p", "hostPath": {"path": "/var/lib/kaito-py/d", "type": "Directory"}},
        {"name": "i", "emptyDir": {}},
    ]
    # a volume or node path is someone else's data; an image's copy is the pod's own
    assert [m.get("readOnly") for m in data.mounts] == [True, True, False]
    assert data.inits == [{"name": "pull-i", "image": "reg/d:1",
                           "command": ["sh", "-c", "cp -r /data/. /mnt/i/"],
                           "volumeMounts": [{"name": "i", "mountPath": "/mnt/i"}]}]


def test_adapters_keep_their_image_mounts_as_they_were() -> None:
    data = PodData()
    data.add_source(DataSource(image="reg/fr:1"), "adapter-0", "/mnt/adapter/fr", "puller-0",
                    pull_dir="/mnt/adapter")
    assert data.mounts == [{"name": "adapter-0", "mountPath": "/mnt/adapter/fr"}]
    assert data.inits[0]["command"] == ["sh", "-c", "cp -r /data/. /mnt/adapter/"]
    assert data.inits[0]["volumeMounts"] == [{"name": "adapter-0", "mountPath": "/mnt/adapter"}]


def test_adapter_volumes_and_node_paths_are_mounted_read_only() -> None:
    data = PodData()
    data.add_source(DataSource(volume_source={"persistentVolumeClaim": {"claimName": "c"}}), "adapter-0",
                    "/mnt/adapter/a", "puller-0", pull_dir="/mnt/adapter")
    data.add_source(DataSource(path="/var/lib/kaito-py/b"), "adapter-1", "/mnt/adapter/b", "puller-1",
                    pull_dir="/mnt/adapter")
    assert [m["readOnly"] for m in data.mounts] == [True, True]


def test_a_name_inside_the_volume_source_cannot_rename_the_volume() -> None:
    """A ``name`` key spliced in after ours would rename the volume (or shadow another one)."""
    data = PodData()
    data.add_source(DataSource(volume_source={"name": "model-cache", "emptyDir": {}}), "adapter-0",
                    "/mnt/adapter/a", "puller-0")
    assert data.volumes[0]["name"] == "adapter-0"
