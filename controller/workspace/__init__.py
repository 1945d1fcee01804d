"""The Workspace controller: turns a kaito.sh Workspace into Machines and a RayService (or a tuning Job).

Modules, one job each: ``names`` (deterministic names and labels), ``plan`` (the estimator's layout),
``machines``, ``inference`` (RayService + Service), ``tuning`` (Job), ``serveconfig`` (inputs to
rayserve's builder), ``status`` (conditions from observations), ``validation``, ``metrics``,
``reconciler`` (the I/O) and ``setup`` (Manager wiring).
"""
