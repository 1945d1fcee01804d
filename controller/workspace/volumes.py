"""From a Workspace data source (an adapter's, a tuning input's) to what a pod needs to read it.

One mapping for every pod that reads data, so an adapter and a dataset given the same way land
the same way: a ``volumeSource`` is mounted as is, a node ``path`` is a hostPath directory, and an
``image`` is copied out of its ``/data`` by an init container into an emptyDir (Kaito's puller).
URLs are not mounted: the process fetches them itself.
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

    def add_source(self, src: DataSource, volume: str, path: str, puller: str, *, read_only: bool,
                   pull_dir: str | None = None) -> bool:
        """Mount ``src`` at ``path`` under the volume name ``volume``; False if it has nothing to
        mount (URLs, or no source at all).

        ``read_only``: the main container mounts a volume or node path read-only (and says
        ``readOnly: false`` of an image's copy, the pod's own). ``puller`` names an image's init
        container, which mounts the volume at ``pull_dir`` (default ``path``; what lands in the
        emptyDir is the same either way). Adapters pass ``read_only=False`` and ``/mnt/adapter``:
        what their mounts always were, so no existing RayService's spec hash moves.
        """
        if src.volume_source:
            self.volumes.append({"name": volume, **src.volume_source})
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
        if read_only:
            mount["readOnly"] = not src.image
        self.mounts.append(mount)
        return True
