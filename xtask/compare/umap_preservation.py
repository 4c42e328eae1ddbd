"""Neighbourhood preservation of umap-learn's map of an SAE's decoder directions: the reference
for the cluster stage's own UMAP-style layout (same metric as `map.neighbourhood_preservation`
in the cluster stage's summary.json: the mean fraction of each feature's 10 nearest features
by decoder cosine that are among its 10 nearest points on the map, here over all features).

    python3 -m venv /tmp/umap && /tmp/umap/bin/pip install umap-learn safetensors numpy
    /tmp/umap/bin/python xtask/compare/umap_preservation.py runs/quickstart/train/sae/sae_weights.safetensors
"""
import sys
import time

import numpy as np
import umap
from safetensors.numpy import load_file

w = load_file(sys.argv[1])
dec = w["W_dec"].astype(np.float32)
dec /= np.linalg.norm(dec, axis=1, keepdims=True)
sims = dec @ dec.T
np.fill_diagonal(sims, -2)
k = 10
truth = np.argsort(-sims, axis=1)[:, :k]
t = time.time()
emb = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=0).fit_transform(dec)
el = time.time() - t
d = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
np.fill_diagonal(d, np.inf)
near = np.argsort(d, axis=1)[:, :k]
pres = np.mean([len(set(truth[i]) & set(near[i])) / k for i in range(len(dec))])
print(f"umap-learn {umap.__version__}: {len(dec)} features, neighbourhood preservation@{k} {pres:.3f}, {el:.1f} s")
