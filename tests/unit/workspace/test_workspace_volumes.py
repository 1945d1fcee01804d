"""One mapping from a data source to a pod's volumes, mounts and init containers (adapters and
tuning inputs alike)."""

from __future__ import annotations

from controller.api.workspace import DataSource
from controller.workspace.volumes import PodData


def test_each_kind_of_source_lands_the_same_way_for_every_pod() -> None:
    data = PodData()
    assert data.add_source(DataSource(volume_source={"persistentVolumeClaim": {"claimName": "c"}}),
                           "v", "/mnt/v", "pull-v", read_only=True)
    assert data.add_source(DataSource(path="/srv/d"), "p", "/mnt/p", "pull-p", read_only=True)
    assert data.add_source(DataSource(image="reg/d:1"), "i", "/mnt/i", "pull-i", read_only=True)
    assert not data.add_source(DataSource(urls=["https://example.com/d.jsonl"]), "u", "/mnt/u", "pull-u",
                               read_only=True)  # the process fetches URLs itself
    assert data.volumes == [
        {"name": "v", "persistentVolumeClaim": {"claimName": "c"}},
        {"name": "p", "hostPath": {"path": "/srv/d", "type": "Directory"}},
        {"name": "i", "emptyDir": {}},
    ]
    # a volume or node path is someone else's data; an image's copy is the pod's own
    assert [m.get("readOnly") for m in data.mounts] == [True, True, False]
    assert data.inits == [{"name": "pull-i", "image": "reg/d:1",
                           "command": ["sh", "-c", "cp -r /data/. /mnt/i/"],
                           "volumeMounts": [{"name": "i", "mountPath": "/mnt/i"}]}]


def test_adapters_keep_their_mounts_as_they_were() -> None:
    data = PodData()
    data.add_source(DataSource(image="reg/fr:1"), "adapter-0", "/mnt/adapter/fr", "puller-0",
                    read_only=False, pull_dir="/mnt/adapter")
    assert data.mounts == [{"name": "adapter-0", "mountPath": "/mnt/adapter/fr"}]
    assert data.inits[0]["command"] == ["sh", "-c", "cp -r /data/. /mnt/adapter/"]
    assert data.inits[0]["volumeMounts"] == [{"name": "adapter-0", "mountPath": "/mnt/adapter"}]
