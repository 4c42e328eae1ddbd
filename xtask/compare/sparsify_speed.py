"""sparsify's TopK training speed on a GPU at given shapes, for `cargo xtask gpu-check
--sparsify-python PY` (the same shapes as `cargo xtask bench train --device cuda`).

    python3 -m venv ~/sparsify-venv && ~/sparsify-venv/bin/pip install eai-sparsify
    ~/sparsify-venv/bin/python xtask/compare/sparsify_speed.py --shape 768x16384 --k 32

One step is sparsify 1.3's training step for one hook point written out with its own parts
(`Trainer.fit` wants a transformers model to hook): unit-norm decoder, forward with its fused
Triton TopK decoder where the GPU has Triton, FVU loss plus AuxK (alpha 1/32, every latent
counted dead so AuxK always runs, as a pessimistic bound), backward, removal of the gradient
parallel to the decoder rows, and Adam (lr 2e-4). Rows are Gaussian, drawn on the GPU once;
steps are timed after `--warmup` untimed ones, with the device synchronised around the timed
window. Prints one JSON object per measurement, in the benchmarks' shape.
"""
import argparse
import json
import time

ap = argparse.ArgumentParser()
ap.add_argument("--shape", action="append", required=True, help="D_INxD_SAE, repeatable")
ap.add_argument("--k", type=int, default=32)
ap.add_argument("--batch", type=int, default=4096)
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--device", default="cuda")
args = ap.parse_args()

import torch  # noqa: E402
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402

for shape in args.shape:
    d_in, d_sae = (int(v) for v in shape.split("x"))
    torch.manual_seed(0)
    sae = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=args.k), device=args.device)
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4)
    rows = torch.randn(args.batch * 4, d_in, device=args.device)
    dead = torch.ones(d_sae, dtype=torch.bool, device=args.device)

    def step(i):
        x = rows[(i % 4) * args.batch:(i % 4 + 1) * args.batch]
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x, x, dead_mask=dead)
        (out.fvu + out.auxk_loss / 32).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(args.warmup):
        step(i)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    torch.cuda.synchronize()
    rate = args.steps * args.batch / (time.perf_counter() - start)
    case = f"sparsify topk k={args.k} {d_in}x{d_sae} batch {args.batch}"
    print(json.dumps(dict(bench="gpu-check", case=case, metric="throughput", value=rate,
                          unit="tokens/s", gpu=torch.cuda.get_device_name())))
