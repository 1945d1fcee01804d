"""A tuning Workspace with ``output.image``: the Job's pusher publishes the adapter as an image.

The Job shape is checked as data; the push script itself runs here, in ``sh``, against a fake
``crane`` on PATH that records its arguments and unpacks the layer it was given, so what would be
pushed is checked file by file (no registry, no network).
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

from ws_unit_helpers import workspace

from controller.workspace.adapter_push import BASE_IMAGE, EXIT_MARKER, PUSH_SCRIPT
from controller.workspace.plan import Plan
from controller.workspace.tuning import build_tuning_job

PLAN = Plan("phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4", node_count=1, gpus_per_node=1,
            model_source="m")
IMAGE = "myregistry.azurecr.io/adapters/phi-3-dolly:0.0.1"


def _job(output: dict) -> dict:
    ws = workspace(tuning={"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                           "input": {"urls": ["https://example.com/d.parquet"]}, "output": output})
    return build_tuning_job(ws, PLAN, "img:1", output_dir="/mnt/results/phi")


def test_image_output_adds_a_pusher_and_records_the_trainers_exit_code() -> None:
    pod = _job({"image": IMAGE, "imagePushSecret": "push"})["spec"]["template"]["spec"]
    trainer, pusher = pod["containers"]
    assert trainer["command"][:2] == ["sh", "-c"] and "args" not in trainer
    script = trainer["command"][2]
    assert script.startswith("python -m rayserve.tuning --model m --method qlora")
    assert f"> {EXIT_MARKER}" in script and script.endswith('exit "$rc"')
    env = {e["name"]: e["value"] for e in pusher["env"]}
    assert env["OUTPUT_IMAGE"] == IMAGE and env["ADAPTER_DIR"] == "/mnt/results/phi"
    [auth] = [v for v in pod["volumes"] if v["name"] == "push-auth"]
    assert auth["secret"] == {"secretName": "push",
                              "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
    auth_mount = {"name": "push-auth", "mountPath": env["DOCKER_CONFIG"], "readOnly": True}
    assert auth_mount in pusher["volumeMounts"]
    # a volume destination keeps the plain single-container Job
    plain = _job({"volumeSource": {"emptyDir": {}}})["spec"]["template"]["spec"]
    assert [c["name"] for c in plain["containers"]] == ["tuning"]
    assert plain["containers"][0]["command"] == ["python", "-m", "rayserve.tuning"]


def _run_push(tmp_path: Path, exit_code: str) -> tuple[subprocess.CompletedProcess, Path]:
    results = tmp_path / "results"
    adapter = results / "phi"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    marker = results / Path(EXIT_MARKER).name
    marker.write_text(exit_code + "\n")
    bin_dir, pushed = tmp_path / "bin", tmp_path / "pushed"
    bin_dir.mkdir()
    crane = bin_dir / "crane"
    crane.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/crane-args\n'
                     f'mkdir -p {pushed}\ntar -C {pushed} -xf "$5"\n')  # $5: the --new_layer file
    crane.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ADAPTER_DIR": str(adapter),
           "OUTPUT_IMAGE": IMAGE, "BASE_IMAGE": BASE_IMAGE, "EXIT_MARKER": str(marker), "POLL_SECONDS": "0.1"}
    done = subprocess.run(["sh", "-c", PUSH_SCRIPT], env=env, capture_output=True, text=True, timeout=30)
    return done, pushed


def test_push_script_publishes_the_adapter_under_data(tmp_path: Path) -> None:
    done, pushed = _run_push(tmp_path, "0")
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "crane-args").read_text().split()
    assert args[0] == "append" and args[args.index("--base") + 1] == BASE_IMAGE
    assert args[args.index("--new_tag") + 1] == IMAGE
    assert sorted(p.name for p in (pushed / "data").iterdir()) == ["adapter_config.json",
                                                                  "adapter_model.safetensors"]
    assert tarfile.is_tarfile(args[args.index("--new_layer") + 1])
    assert f"pushed the adapter in {tmp_path}/results/phi as {IMAGE}" in done.stdout


def test_push_script_pushes_nothing_after_a_failed_run(tmp_path: Path) -> None:
    done, pushed = _run_push(tmp_path, "1")
    assert done.returncode == 0 and "tuning failed (exit 1): nothing to push" in done.stdout
    assert not (tmp_path / "crane-args").exists() and not pushed.exists()
