"""From a Workspace data source (an adapter's, a tuning input's) to what a pod needs to read it.

One mapping for every pod that reads data, so an adapter and a dataset given the same way land
the same way: a ``volumeSource`` is mounted under our volume name, a node ``path`` is a hostPath
directory, and an ``image`` is copied out of its ``/data`` by an init container into an emptyDir
(Kaito's puller). URLs are not mounted: the process fetches them itself.

What may be mounted at all (volume types, CSI drivers, node directories) is decided by admission
and the reconciler alike (``controller.api.datasources``); here a volume and a node path are
always mounted read-only, since they are data the workspace reads, not writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.api.workspace import DataSource


@dataclass
class PodData:
    """The volumes, main-container mounts and init containers gathered for one pod."""

    volumes: list[dict] = field(default_factory=list)
    mounts: list[dict] = field(default_factory=list)
    inits: list[dict] = field(default_factory=list)

    def add_source(self, src: DataSource, volume: str, path: str, puller: str, *,
                   pull_dir: str | None = None, mark_copy: bool = False) -> bool:
        """Mount ``src`` at ``path`` under the volume name ``volume``; False if it has nothing to
        mount (URLs, or no source at all).

        A volume or node path is someone else's data: the main container mounts it read-only.
        An image's copy is the pod's own emptyDir; ``mark_copy`` says ``readOnly: false`` of it
        (the tuning Job always did), adapters leave it unsaid so that an image adapter's mount,
        and with it an existing RayService's spec hash, does not move. ``puller`` names an
        image's init container, which mounts the volume at ``pull_dir`` (default ``path``; what
        lands in the emptyDir is the same either way).
        """
        if src.volume_source:
            # our name last: a ``name`` key in the user's source must not rename (or shadow) a volume
            self.volumes.append({**src.volume_source, "name": volume})
        elif src.path:
            self.volumes.append({"name": volume, "hostPath": {"path": src.path, "type": "Directory"}})
        elif src.image:
            into = pull_dir or path
            self.volumes.append({"name": volume, "emptyDir": {}})
            self.inits.append({
                "name": puller,
                "image": src.image,
                "command": ["sh", "-c", f"cp -r /data/. {into}/"],
                "volumeMounts": [{"name": volume, "mountPath": into}],
            })
        else:
            return False
        mount: dict = {"name": volume, "mountPath": path}
        if not src.image:
            mount["readOnly"] = True
        elif mark_copy:
            mount["readOnly"] = False
        self.mounts.append(mount)
        return True
