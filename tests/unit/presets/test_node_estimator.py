"""The node-count estimator's arithmetic and its explanations."""

from __future__ import annotations

import pytest

from presets.estimator import MAX_NODES, EstimateError, estimate_for, estimate_nodes
from presets.registry import GpuSku, default_catalog


def test_phi_3_mini_fits_one_v100():
    est = estimate_for("phi-3-mini-4k-instruct", "Standard_NC6s_v3")
    assert (est.node_count, est.gpus_needed, est.tensor_parallel, est.pipeline_parallel) == (1, 1, 1, 1)
    assert est.message == (
        "phi-3-mini-4k-instruct needs 9 GiB of GPU memory at float16; Standard_NC6s_v3 has 1x16GiB V100 per "
        "node, 14.4 GiB usable per GPU (90%) -> 1 GPU -> 1 node"
    )


def test_phi_3_medium_on_v100s_needs_two_nodes_as_two_pipeline_stages():
    est = estimate_for("phi-3-medium-4k-instruct", "Standard_NC6s_v3")
    # 28 GiB / (16 GiB x 0.9) = 1.94 -> 2 GPUs; 1 GPU per node -> 2 nodes, one stage each
    assert (est.node_count, est.tensor_parallel, est.pipeline_parallel, est.gpus_per_replica) == (2, 1, 2, 2)
    assert est.replicas == 1
    assert "28 GiB" in est.message and "1x16GiB V100 per node" in est.message
    assert est.message.endswith("-> 2 GPUs -> 2 nodes (tensor parallel 1 x pipeline parallel 2)")


def test_tensor_parallel_divides_the_kv_heads():
    # phi-3-medium has 40 heads but 10 KV heads: on 4 GPUs, tp 4 would not divide 10 -> tp 2
    est = estimate_for("phi-3-medium-4k-instruct", "Standard_NC24s_v3")
    assert (est.node_count, est.tensor_parallel, est.pipeline_parallel, est.replicas) == (1, 2, 1, 2)
    assert "room for 2 replicas" in est.message


def test_seventy_b_spans_several_a100_nodes_or_one_nd96():
    est = estimate_for("llama-3.1-70b-instruct", "Standard_NC24ads_A100_v4")
    # 152 / 72 = 2.1 -> 3 GPUs, one per node
    assert (est.node_count, est.pipeline_parallel) == (3, 3)
    est = estimate_for("llama-3.1-70b-instruct", "Standard_ND96asr_A100_v4")
    # 152 / 36 = 4.2 -> 5 GPUs, tp 8 (divides 64 heads and is a multiple of 8 KV heads) on one node
    assert (est.node_count, est.tensor_parallel, est.pipeline_parallel) == (1, 8, 1)


def test_bfloat16_runs_as_float16_on_old_gpus():
    assert "at float16" in estimate_for("mistral-7b-instruct", "Standard_NC6s_v3").message
    assert "at bfloat16" in estimate_for("mistral-7b-instruct", "Standard_NC24ads_A100_v4").message


def test_requested_count_adds_replicas():
    est = estimate_for("tiny-phi-3", "Standard_Fake_GPU", requested_count=2)
    assert (est.node_count, est.replicas) == (2, 2)
    assert "resource.count asks for 2 -> 2 nodes" in est.message


def test_single_node_model_too_big_for_the_node_names_skus_that_fit():
    with pytest.raises(EstimateError) as err:
        estimate_for("falcon-7b-instruct", "Standard_Fake_GPU")
    msg = str(err.value)
    assert "needs 14 GiB" in msg and "0.9 GiB per node" in msg and "cannot be split across nodes" in msg
    assert err.value.suggestions and all(s in msg for s in err.value.suggestions)


def test_too_many_nodes_is_refused():
    with pytest.raises(EstimateError) as err:
        estimate_for("llama-3.1-70b-instruct", "Standard_NC6s_v3")
    assert f"11 nodes, more than the {MAX_NODES}" in str(err.value)
    assert "Standard_ND96asr_v4" in err.value.suggestions


def test_tuning_is_single_node_and_uses_the_method_memory():
    est = estimate_for("phi-3-mini-4k-instruct", "Standard_NC6s_v3", tuning_method="qlora")
    assert est.node_count == 1 and est.needed_gib == 12
    with pytest.raises(EstimateError, match=r"lora tuning of phi-3-mini-4k-instruct needs 72 GiB.*single"):
        estimate_for("phi-3-mini-4k-instruct", "Standard_NC6s_v3", tuning_method="lora")
    with pytest.raises(EstimateError, match="does not support tuning"):
        estimate_for("llama-3.1-70b-instruct", "Standard_ND96amsr_A100_v4", tuning_method="lora")


def test_unknown_names_suggest_close_matches():
    with pytest.raises(EstimateError, match=r"unknown preset 'phi-3-mini'\. Did you mean") as err:
        estimate_for("phi-3-mini", "Standard_NC6s_v3")
    assert "phi-3-mini-4k-instruct" in err.value.suggestions
    with pytest.raises(EstimateError, match="unknown instance type 'Standard_NC6_v3'") as err:
        estimate_for("phi-3-mini-4k-instruct", "Standard_NC6_v3")
    assert err.value.suggestions[0] == "Standard_NC6s_v3"


def test_long_context_model_is_capped_to_what_the_kv_cache_room_holds():
    from presets.estimator import CONTEXT_STEP, kv_bytes_per_token
    from presets.registry import get_preset

    # phi-3-mini: 2 x 32 layers x 32 KV heads x 96 x 2 bytes = 384 KiB per token; 14.4 - 7.12 GiB left
    est = estimate_for("phi-3-mini-128k-instruct", "Standard_NC6s_v3")
    preset = get_preset("phi-3-mini-128k-instruct")
    per_token = kv_bytes_per_token(preset, "float16")
    assert per_token == 384 * 1024
    room = (14.4 - 7.12) * 2**30
    assert est.max_context == int(room // per_token) // CONTEXT_STEP * CONTEXT_STEP == 19712
    assert est.message.endswith(
        "; KV cache 384 KiB per token, 7.28 GiB left after the weights -> context capped at 19712 of the "
        "model's 131072 tokens"
    )
    assert est.kv_budget_tokens == int(room // per_token)  # shared by the batch: rows x tokens
    # the same model on an 80 GiB A100 keeps its whole window, and says nothing about it
    est = estimate_for("phi-3-mini-128k-instruct", "Standard_NC24ads_A100_v4")
    assert est.max_context == 131072 and "capped" not in est.message
    # 4k models fit their window on the GPUs the estimate picks
    assert estimate_for("phi-3-medium-4k-instruct", "Standard_NC6s_v3").max_context == 4096
    # tuning has no serving context
    tuning = estimate_for("phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4", tuning_method="qlora")
    assert tuning.max_context is None


def test_unknown_head_dim_means_no_cap():
    from presets.estimator import served_context
    from presets.registry import get_preset

    preset = get_preset("phi-3-mini-128k-instruct").model_copy(update={"head_dim": None})
    assert served_context(preset, "float16", replica_gib=8.0) == (131072, "")


def test_pipeline_replicas_cap_the_context_to_one_batchs_share():
    # phi-3-medium-128k on V100s: 2 stages -> 2 batches in flight, each with its own KV cache
    est = estimate_for("phi-3-medium-128k-instruct", "Standard_NC6s_v3")
    assert est.pipeline_parallel == 2 and est.kv_budget_tokens
    assert est.max_context <= est.kv_budget_tokens // 2
    assert "shared by 2 batches in flight" in est.message


def test_mla_caches_one_latent_per_layer_not_keys_and_values_per_head():
    from presets.estimator import kv_bytes_per_token
    from presets.registry import get_preset

    deepseek = get_preset("deepseek-v3-0324")
    assert kv_bytes_per_token(deepseek, "bfloat16") == 61 * (512 + 64) * 2  # 70 KiB, not 5.7 MiB
    llama = get_preset("llama-3.3-70b-instruct")
    assert kv_bytes_per_token(llama, "bfloat16") == 2 * 80 * 8 * 128 * 2  # Kaito's 327,680


def test_moe_weights_hold_every_expert():
    from presets.registry import get_preset

    # gpt-oss-120b runs 4 of 128 experts per token, yet all 117B parameters sit in GPU memory
    oss = get_preset("gpt-oss-120b")
    assert oss.experts is not None and (oss.experts.total, oss.experts.active) == (128, 4)
    assert oss.weights_gib > 100 and oss.gpu_memory_gib > oss.weights_gib


def test_unquantized_weights_run_on_old_gpus():
    assert estimate_for("deepseek-r1-distill-llama-8b", "Standard_NC24s_v3").node_count == 1  # V100s


def test_fp8_before_ada_is_planned_dequantized_to_bf16():
    a100 = estimate_for("ministral-3-8b-instruct", "Standard_NC24ads_A100_v4")
    h100 = estimate_for("ministral-3-8b-instruct", "Standard_NC40ads_H100_v5")
    # 9.7 GiB of FP8 weights: 11.7 GiB on a GPU that runs FP8; where transformers dequantizes them
    # (compute capability below 8.9) the model is 8.92B parameters x 2 bytes = 16.61 GiB, 6.91 more
    assert h100.needed_gib == 11.7 and a100.needed_gib == 18.61
    assert "(fp8 weights dequantized to bf16 on A100) needs 18.61 GiB" in a100.message


def test_mxfp4_is_planned_dequantized_on_every_gpu_since_the_image_lacks_its_kernels():
    """Kaito's gpt-oss examples: transformers keeps MXFP4 4-bit only with the `kernels` package,
    which the serving image does not carry, so the experts become bf16 (20.91B x 2 bytes = 38.94
    GiB for gpt-oss-20b, not its 12.8 GiB of MXFP4): 2 A10 nodes, 4 A100 nodes for the 120b."""
    small = estimate_for("gpt-oss-20b", "Standard_NV36ads_A10_v5")
    assert (small.needed_gib, small.node_count, small.pipeline_parallel) == (42.52, 2, 2)
    assert "(mxfp4 weights dequantized to bf16 on A10)" in small.message
    big = estimate_for("gpt-oss-120b", "Standard_NC24ads_A100_v4")
    assert (big.needed_gib, big.node_count, big.pipeline_parallel) == (230.77, 4, 4)
    assert estimate_for("gpt-oss-20b", "Standard_NC40ads_H100_v5").needed_gib == 42.52  # Hopper too
    with pytest.raises(EstimateError, match=r"compute capability 8\.0 or newer; Standard_NC6s_v3's V100"):
        estimate_for("gpt-oss-20b", "Standard_NC6s_v3")


def test_a_format_without_a_fallback_is_refused_on_older_gpus_naming_newer_ones():
    from presets.registry import default_catalog

    catalog = default_catalog()
    nvfp4 = catalog.quantizations["nvfp4"]
    assert nvfp4.older_gpus == "refuse"
    with pytest.raises(EstimateError) as err:
        estimate_for("mistralai/Mistral-Small-4-119B-2603-NVFP4", "Standard_ND96isr_H100_v5")
    assert "ships nvfp4 weights, which need GPUs of CUDA compute capability 10.0 or newer" in str(err.value)


def test_each_stage_reads_its_share_so_kaitos_deepseek_example_fits_nc80adis():
    """Kaito's DeepSeek examples: 6 x Standard_NC80adis_H100_v5 (2 x 94 GiB H100 NVL, 640 GiB of
    host memory each) for a 641.3 GiB FP8 checkpoint. FP8 stays FP8 on Hopper: 706.5 GiB of GPU
    memory / 84.6 usable per GPU -> 9 GPUs -> 9 pipeline stages (MLA and MoE layers do not split
    by heads in the engine), two per node, each reading 1/9 of the checkpoint: 142.5 GiB a node,
    not 641.3 GiB per stage."""
    est = estimate_for("deepseek-v3-0324", "Standard_NC80adis_H100_v5", 6)
    assert (est.tensor_parallel, est.pipeline_parallel, est.node_count) == (1, 9, 6)
    assert "dequantized" not in est.message


def test_a_node_whose_host_memory_cannot_hold_its_stages_share_is_refused():
    preset = default_catalog().preset("deepseek-v3-0324")
    small_host = GpuSku(name="Test_8xH100_64GiB_host", gpu_count=8, gpu_memory_gib=94, gpu_model="H100",
                        cuda_compute="9.0", vcpus=96, memory_gib=64)
    with pytest.raises(EstimateError) as err:
        estimate_nodes(preset, small_host)
    msg = str(err.value)
    assert "its 8 stages on a node read 8/9 of the 641.3 GiB checkpoint, 570.04 GiB" in msg
    assert "more than the 64 GiB of host memory of Test_8xH100_64GiB_host" in msg
