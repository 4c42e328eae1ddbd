"""sparsify trained on exactly the rows a monoscope SAE was trained on, for `cargo xtask bench
quality --sparsify-python PY` (which exports the rows and calls this script, then scores the
saved sparsify SAE and monoscope's with one evaluator).

    python3 -m venv ~/sparsify-venv && ~/sparsify-venv/bin/pip install eai-sparsify numpy
    ~/sparsify-venv/bin/python xtask/compare/sparsify_quality.py \
        --train train.npy --held held.npy --d-sae 4608 --k 32 --epochs 2 --out sparsify-sae

The loop is sparsify 1.3's `Trainer.fit` for one hook point with its defaults (loss "fvu",
optimizer "signum": its `SignSGD` inside schedulefree's `ScheduleFreeWrapper` with momentum
0.95, lr 5e-3 / sqrt(num_latents / 2**14), no AuxK), written out with sparsify's own parts
because `fit` wants a transformers model to hook:
- the decoder bias starts at the first batch's mean;
- decoder rows are set to unit norm before every forward, and the gradient's component
  along them is removed before every step;
- the optimizer is switched to its average (eval mode) before the SAE is saved.
Training rows are shuffled with a fixed seed; batches of `--batch` rows, the last partial
batch of each epoch dropped. Prints one JSON line: the held-out FVU and L0 by this script's
own formula (a cross-check of the Rust evaluator), rows, steps and tokens/s.
"""
import argparse
import json
import os
import time

ap = argparse.ArgumentParser()
ap.add_argument("--train", required=True, help="float32/float16 .npy [N, d_in], capture order")
ap.add_argument("--held", required=True, help=".npy of the held-out rows")
ap.add_argument("--d-sae", type=int, required=True)
ap.add_argument("--k", type=int, default=32)
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--batch", type=int, default=4096)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--out", required=True, help="directory for the sparsify SAE (sae.safetensors + cfg.json)")
args = ap.parse_args()
# sparsify's fused kernels are Triton (GPU-only); its PyTorch path is the one that runs here.
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from schedulefree import ScheduleFreeWrapper  # noqa: E402
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402
from sparsify.sign_sgd import SignSGD  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
train = np.load(args.train).astype(np.float32)
held = torch.from_numpy(np.load(args.held).astype(np.float32))
d_in = train.shape[1]

sae = SparseCoder(d_in, SparseCoderConfig(num_latents=args.d_sae, k=args.k))
lr = 5e-3 / (args.d_sae / 2**14) ** 0.5
opt = ScheduleFreeWrapper(SignSGD([dict(params=sae.parameters(), lr=lr)]), momentum=0.95)
opt.train()

rng = np.random.default_rng(args.seed)
steps, start = 0, time.time()
for epoch in range(args.epochs):
    order = rng.permutation(len(train))
    for s in range(0, len(order) - args.batch + 1, args.batch):
        x = torch.from_numpy(train[np.sort(order[s:s + args.batch])])
        if steps == 0:
            sae.b_dec.data = x.mean(0)
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x, x, dead_mask=None)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        steps += 1
elapsed = time.time() - start
opt.eval()
sae.save_to_disk(args.out)

with torch.no_grad():
    se, l0 = 0.0, 0
    for s in range(0, len(held), 4096):
        xb = held[s:s + 4096]
        enc = sae.encode(xb)
        se += (sae.decode(enc.top_acts, enc.top_indices) - xb).pow(2).sum().item()
        l0 += int((enc.top_acts > 0).sum())
    tv = (held - held.mean(0)).pow(2).sum().item()
print(json.dumps(dict(impl="sparsify", fvu=se / tv, l0=l0 / len(held), steps=steps,
                      train_rows=len(train), held_rows=len(held),
                      tokens_per_s=steps * args.batch / max(elapsed, 1e-9))))
