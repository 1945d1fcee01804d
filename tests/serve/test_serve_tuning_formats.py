"""rayserve.tuning trains from a parquet dataset, the format of Kaito's recommended dataset
(dolly-15k-oai-style, which config/samples/workspace_tuning_qlora_phi_3.yaml points at): CPU, the
tiny model, a few steps."""

from __future__ import annotations

import json

import pytest

from tests.serve.conftest import QA, write_dataset

pytestmark = pytest.mark.serve


def test_training_from_parquet_writes_the_adapter(tiny_model, tmp_path):
    import pyarrow.parquet as pq
    from pyarrow import json as pajson

    from rayserve.tuning.train import main

    # the same rows as the JSONL fixture, as parquet (messages: list<struct<role, content>>)
    jsonl = write_dataset(tmp_path / "d.jsonl", QA)
    data = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pajson.read_json(jsonl), data)
    out = tmp_path / "adapter"
    result = main(
        ["--model", str(tiny_model), "--data", str(data), "--output", str(out),
         "--max-steps", "3", "--rank", "2", "--batch-size", "2"]
    )
    assert result["examples"] == len(QA) and result["steps"] == 3
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2
    assert json.loads((out / "training_result.json").read_text())["steps"] == 3
