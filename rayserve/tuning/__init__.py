"""LoRA / QLoRA fine-tuning that writes adapters the serve app loads (``AdapterSpec.path``).

Run as ``python -m rayserve.tuning --model DIR --data PATH_OR_URL --output DIR [--config FILE]``;
``--config`` takes Kaito's ``training_config.yaml`` (``rayserve.tuning.config``: what is mapped,
what is ignored; ``rayserve.tuning.cli``: why flags win over the file); see ``rayserve.tuning.train``
for the loop.
"""
