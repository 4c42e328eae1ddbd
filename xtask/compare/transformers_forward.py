"""Hugging Face transformers' prompt-processing throughput on exactly the batches of
`cargo xtask bench forward --reference-python PY` (which writes the token ids and calls this
script in the same run, so both sides see the same machine load).

    python3 -m venv ~/tf-venv && ~/tf-venv/bin/pip install torch transformers gguf
    ~/tf-venv/bin/python xtask/compare/transformers_forward.py --model M --ids ids.json \
        --block 15 --threads 2

`--model` is a Hugging Face directory or a GGUF file (transformers dequantises it to f32).
`ids.json` is a list of batches, each a list of equal-length rows of token ids. Each batch runs
once through block `--block` (the decoder truncated after it, no final norm or head: the
capture workload) and once through every block with all logits, in float32 with eager
attention, after one warm-up batch. Prints one JSON line: tokens/s of each case.
"""
import argparse
import json
import os
import time

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--ids", required=True)
ap.add_argument("--block", type=int, required=True)
ap.add_argument("--threads", type=int, default=os.cpu_count())
args = ap.parse_args()

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

torch.set_num_threads(args.threads)
if os.path.isdir(args.model):
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
else:
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(args.model)),
        gguf_file=os.path.basename(args.model),
        dtype=torch.float32,
    )
model.eval()
batches = [torch.tensor(b, dtype=torch.long) for b in json.load(open(args.ids))]
layers = model.model.layers


def through_block(ids):
    model.model.layers = layers[: args.block + 1]
    try:
        return model.model(input_ids=ids, use_cache=False).last_hidden_state
    finally:
        model.model.layers = layers


def all_logits(ids):
    return model(input_ids=ids, use_cache=False).logits


result = {}
with torch.inference_mode():
    for name, run in [(f"through block {args.block}", through_block), ("all blocks + logits", all_logits)]:
        run(batches[0])  # warm-up
        start = time.perf_counter()
        tokens = 0
        for ids in batches:
            run(ids)
            tokens += ids.numel()
        result[name] = tokens / (time.perf_counter() - start)
print(json.dumps(result))
