"""LoRA / QLoRA fine-tuning that writes adapters the serve app loads (``AdapterSpec.path``).

Run as ``python -m rayserve.tuning --model DIR --data PATH_OR_URL --output DIR``; see
``rayserve.tuning.train`` for the options.
"""
