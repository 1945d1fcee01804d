"""One Workspace per proven architecture, to Ready in the local loop and answering ``/chat`` as
transformers' ``generate`` does, with a tiny stand-in checkpoint served under the model's own id.

Why: the proofs (tests/unit/rayserve/test_rayserve_architectures.py) load checkpoints by path and
tests/unit/workspace/test_workspace_standins.py runs a replica in-process; a user's Workspace
names a model, and the loop from there (webhook, plan on the SKU Kaito's example names, Machines
and fake GPU nodes, RayService, the replica downloading the id from a hub, Serve) is where an
architecture could still fail. Here every piece is a real process: the LocalStack of
tests/e2e/test_local_loop.py, with hack/fake_hf_hub.py serving each stand-in
(tests/e2e/standin_checkpoints.py) under the model's id.

Choices that keep it honest and cheap (2 cores):

* The Workspaces name the instance types Kaito's examples use (A100, A10); the fake cloud boots
  those SKUs, and the Ray head declares logical GPUs so the replicas that ask for one are placed;
  without CUDA they run on its CPUs. The head's GPUs (``CONCURRENT``) bound how many replicas load
  at once: all Workspaces are applied together, and each is deleted once it has answered, which
  frees its GPU for the next.
* A Kaito-style ``inference.config`` sets float32 (the catalog's dtype on these GPUs is bfloat16):
  on CPU float32 makes the engine's arithmetic equal ``generate``'s, so the texts can be compared.
* Where the catalog's presets of an architecture are refused (Qwen3: AWQ) or cannot
  be laid out cheaply (DeepSeek-V3: 2 nodes of 8 H100s, tensor x pipeline 8 x 2, i.e. 16 rank
  actors, more than a 4-head stand-in splits into), a real bf16 checkpoint's id of that
  architecture that the catalog lacks is used instead: the controller resolves it from the hub
  (sized from the stand-in's headers) and it is served the same way. ``test_the_stand_ins_cover``
  checks those reasons still hold.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from controller.api.validation import validate_workspace
from controller.api.workspace import Workspace
from hack.fake_hf_hub import FakeHub
from hack.localstack import LocalStack
from presets.registry import default_catalog
from tests.e2e.standin_checkpoints import greedy_text, standin_checkpoint
from tests.unit.rayserve.tiny_archs import TINY_CONFIGS

pytestmark = pytest.mark.e2e

A100, A10 = "Standard_NC24ads_A100_v4", "Standard_NV36ads_A10_v5"
CONCURRENT = 3  # replicas loading at once: the Ray head's logical GPUs and CPUs
PROMPT, MAX_NEW_TOKENS = "What is Kubernetes?", 12
RUNTIME_CONFIG = "standins-float32"
CONDITIONS = ("ResourceReady", "InferenceReady", "WorkspaceSucceeded", "WorkspaceReady")


@dataclass(frozen=True)
class Served:
    """One Workspace: the model id it names, on which instance type; ``instead_of``: the catalog's
    presets of this architecture that are not used, and ``case`` the proof case for an id the
    catalog lacks (a catalog preset's comes from the catalog)."""

    model: str
    instance_type: str = A100
    case: str | None = None
    instead_of: tuple[str, ...] = ()


SERVED = (
    Served("microsoft/Phi-4-mini-instruct"),
    Served("meta-llama/Llama-3.1-8B-Instruct"),
    Served("mistralai/Mistral-7B-Instruct-v0.3"),
    Served("Qwen/Qwen2.5-7B-Instruct"),
    Served("ibm-granite/granite-4.1-8b"),
    Served("tiiuae/falcon-7b-instruct"),
    Served("google/gemma-3-4b-it", A10),
    Served("mistralai/Ministral-3-8B-Instruct-2512"),  # FP8, as Kaito's checkpoint: an FP8 stand-in
    Served("Qwen/Qwen3-8B", case="Qwen3ForCausalLM", instead_of=("Qwen/Qwen3-8B-AWQ",)),
    Served("openai/gpt-oss-20b"),  # MXFP4, as Kaito's checkpoint: an MXFP4 stand-in, dequantized at load
    Served("moonshotai/Moonlight-16B-A3B-Instruct", case="DeepseekV3ForCausalLM",
           instead_of=("deepseek-v3-0324", "deepseek-r1-0528")),
)
# what the catalog's DeepSeek-V3 presets need on Kaito's host-memory-fitting SKU (see the docstring)
DEEPSEEK_SKU = "Standard_ND96isr_H100_v5"


def proof_case(served: Served) -> str:
    """The architecture proof whose tiny config stands in for ``served.model``: the catalog's (its
    weight format's, for a quantized preset: ministral's FP8) or the one given for an id it lacks."""
    if served.case:
        return served.case
    catalog = default_catalog()
    preset = catalog.preset(served.model)
    assert preset is not None, served.model
    quant = catalog.quantizations.get(preset.quantization or "")
    proof = quant.proof if quant else catalog.architecture(preset.architecture).proof
    return proof.split("[")[1].rstrip("]")


def workspace_name(served: Served) -> str:
    return re.sub(r"For(CausalLM|ConditionalGeneration)$", "", TINY_CONFIGS[proof_case(served)][0]).lower()


def manifest(served: Served, name: str | None = None) -> dict:
    name = name or workspace_name(served)
    return {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name},
        "resource": {"instanceType": served.instance_type, "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": {"name": served.model}, "config": RUNTIME_CONFIG},
    }


def runtime_config() -> dict:
    return {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": RUNTIME_CONFIG},
        # Kaito's layout: the vLLM flag maps onto the serve app's dtype
        "data": {"inference_config.yaml": yaml.safe_dump({"vllm": {"dtype": "float32"}})},
    }


def _admission(model: str, instance_type: str):  # type: ignore[no-untyped-def]
    return validate_workspace(Workspace.model_validate(manifest(Served(model, instance_type), "probe")))


def test_the_stand_ins_cover_every_proven_architecture_and_say_why_a_preset_is_not_used():
    """Cheap, before the loop: one Workspace per architecture the catalog serves; a catalog preset
    wherever one is admitted, and where another id stands in, its presets are still refused (or,
    DeepSeek-V3, still need more than one 8-GPU node)."""
    catalog = default_catalog()
    proven = {a.name for a in catalog.architectures.values() if a.supported}
    assert sorted(TINY_CONFIGS[proof_case(s)][0] for s in SERVED) == sorted(proven)
    for served in SERVED:
        preset = catalog.preset(served.model)
        assert (preset is None) == bool(served.case), f"{served.model}: catalogued iff no case is given"
        if preset is not None:
            assert _admission(served.model, served.instance_type).allowed, served.model
        for name in served.instead_of:
            other = catalog.preset(name)
            assert other is not None and other.architecture == TINY_CONFIGS[served.case or ""][0], name
            if other.architecture == "DeepseekV3ForCausalLM":
                from controller.workspace.plan import plan_for

                plan = plan_for(Workspace.model_validate(manifest(Served(name, DEEPSEEK_SKU), "probe")))
                assert plan.node_count > 1 and plan.tensor_parallel * plan.pipeline_parallel > 8, plan
            else:
                assert not _admission(name, served.instance_type).allowed, name


def _conditions(ws: dict) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c.get("status", ""), c.get("reason", ""), c.get("message", ""))
            for c in (ws.get("status") or {}).get("conditions") or []}


def test_each_proven_architecture_goes_ready_and_answers_like_generate(tmp_path: Path) -> None:
    started = time.monotonic()
    by_name = {workspace_name(s): s for s in SERVED}
    stand_ins = {name: standin_checkpoint(proof_case(s)) for name, s in by_name.items()}
    expected = {name: greedy_text(path, PROMPT, MAX_NEW_TOKENS) for name, path in stand_ins.items()}
    assert all(n > 0 for _, n in expected.values()), expected  # each answer has text to compare
    hub = FakeHub().start()
    for name, served in by_name.items():
        # at the commit the catalog pins (the serve pods load that revision); an id it lacks: main
        preset = default_catalog().preset(served.model)
        hub.add_repo(served.model, stand_ins[name], commit=preset.model_revision if preset else None)
    stack = LocalStack(tmp_path, fake_node_delay=0.5, log=print, hf_endpoint=hub.url,
                       ray_cpus=CONCURRENT, ray_gpus=CONCURRENT)
    ready_after: dict[str, float] = {}
    try:
        stack.start()
        files = tmp_path / "workspaces.yaml"
        files.write_text(yaml.safe_dump_all([runtime_config(), *map(manifest, SERVED)]))
        applied_at = time.monotonic()
        stack.kubectl("apply", "-f", str(files))
        deadline = applied_at + 420  # under pytest-timeout's 600 s, with the stack's start
        while len(ready_after) < len(by_name):
            items = stack.get_json("workspaces")["items"]
            if time.monotonic() > deadline:
                waiting = {ws["metadata"]["name"]: _conditions(ws) for ws in items
                           if ws["metadata"]["name"] not in ready_after}
                raise AssertionError(f"not Ready in time: {waiting}")
            for ws in items:
                name = ws["metadata"]["name"]
                conds = _conditions(ws)
                if name in ready_after or conds.get("WorkspaceReady", ("",))[0] != "True":
                    continue
                ready_after[name] = time.monotonic() - applied_at
                served = by_name[name]
                assert all(conds[c][0] == "True" for c in CONDITIONS), (name, conds)
                _check_layout(stack, ws, served, conds["ResourceReady"][2])
                answer = stack.chat(stack.serve_url(name), PROMPT, MAX_NEW_TOKENS, do_sample=False)
                assert answer["Result"] == PROMPT + expected[name][0], (served.model, answer, expected[name])
                weights = (stand_ins[name] / "model.safetensors").stat().st_size
                assert hub.bytes_served(served.model, "model.safetensors") >= weights, served.model
                print(f"[{ready_after[name]:6.1f}s] {name} ({served.model}) Ready, /chat = generate")
                stack.kubectl("delete", "workspace", name, "--wait=false")  # its GPU goes to the next
            time.sleep(1.0)
        _wait_gone(stack)
        print("\n| workspace | model | Ready after apply (s) |\n|---|---|---|")
        for name, seconds in sorted(ready_after.items(), key=lambda kv: kv[1]):
            print(f"| {name} | {by_name[name].model} | {seconds:.0f} |")
        print(f"\nwhole test: {time.monotonic() - started:.0f} s\n" + stack.timeline.table())
    finally:
        stack.stop()
        hub.stop()


def _check_layout(stack: LocalStack, ws: dict, served: Served, sizing: str) -> None:
    """What the loop ran is what the Workspace asked for: one node of its SKU, the replica loading
    the model's id at the inference.config's dtype on the one GPU the plan gave it."""
    name = ws["metadata"]["name"]
    claims = stack.get_json("nodeclaims", "-l", f"kaito.sh/workspace={name}")["items"]
    assert ws["status"]["targetNodeCount"] == len(claims) == 1, (name, claims)
    wanted = {r["key"]: r.get("values") for r in claims[0]["spec"].get("requirements") or []}
    assert wanted.get("node.kubernetes.io/instance-type") == [served.instance_type], (name, wanted)
    app = yaml.safe_load(stack.get_json("rayservice", name)["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"]["model"]["path"] == served.model and app["args"]["model"]["dtype"] == "float32", app
    assert app["deployments"][0]["ray_actor_options"]["num_gpus"] == 1, app
    # an id the catalog lacks is sized from the stand-in the hub serves; a preset from the catalog
    assert (f"Sized from {served.model}'s config.json" in sizing) == bool(served.case), sizing


def _wait_gone(stack: LocalStack, timeout: float = 180.0) -> None:
    """Every Workspace, NodeClaim and Serve app gone: nothing outlives its Workspace."""
    deadline = time.monotonic() + timeout
    while stack.get_json("workspaces")["items"] or stack.get_json("nodeclaims")["items"] \
            or stack.serve_applications():
        assert time.monotonic() < deadline, "workspaces, nodeclaims or Serve apps left after delete"
        time.sleep(1.0)
