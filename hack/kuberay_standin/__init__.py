"""A local stand-in for KubeRay's RayService controller: runs RayServices' serveConfigV2 on one
local Ray head and writes their status as KubeRay does (see controller.py for what is emulated and
serveconfig.py for how several RayServices share one Serve instance). CLI: ``kaito-kuberay-standin``."""
