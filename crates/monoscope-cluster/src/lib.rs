//! The `cluster` stage: which features of a sparse autoencoder are near each other.
//!
//! Following *Scaling Monosemanticity*, nearness is the cosine similarity of decoder
//! directions (the rows of `W_dec`). The stage finds every feature's nearest neighbours,
//! clusters the neighbour graph, lays the features out on a 2-D map and draws it.
//!
//! # Contract with other stages
//!
//! Stage kind `cluster`. Inputs: `sae` (artifact `sae`, required: an SAE directory, SAELens or
//! sparsify layout); `labels` (artifact `labels`, optional: an autointerp-label stage
//! directory, whose label words name the clusters); `other_sae` (artifact
//! `sae`, optional: a second SAE on the same hook, e.g. a larger one, for cross-SAE neighbours
//! that show feature splitting). Output `clusters` (artifact `clusters`): the stage directory,
//! holding
//!
//! - `neighbours.jsonl`: one line per feature, in order:
//!   `{"feature":u32,"neighbours":[{"feature":u32,"cosine":f32}]}`, the `k` nearest, self
//!   excluded, most similar first; dead features (zero decoder norm) have no neighbours and are
//!   nobody's neighbour;
//! - `clusters.json`: `{"method":str,"resolution":f64,"modularity":f64,"assignment":[u32 per
//!   feature],"clusters":[{"id":u32,"size":u32,"members":[u32],"top_words":[str]}]}`, clusters
//!   sorted by size with ids `0..` (a dead feature is a cluster of its own);
//! - `map.json`: `{"method":str,"x":[f32],"y":[f32],"neighbourhood_preservation":f64}`, one
//!   point per feature, coordinates in `[0, 1]`;
//! - `map.png` always, `map.svg` up to `svg_max_points` features: the map coloured by cluster
//!   (colours by cluster size rank, cycling through 20; dead features light grey);
//! - `summary.json`: search method, timings, the search's memory bound, and for the
//!   approximate search its cells, probes and measured recall@k; cluster count, modularity,
//!   map quality;
//! - `cross_neighbours.jsonl` when `other_sae` is given: each feature's `k` nearest features
//!   of the other SAE, same line format (indices into the other SAE).
//!
//! With `parts = N` part `i` searches the neighbours of the features
//! `Work::share(i, N, features)` among all of them and writes their full lists
//! (`max(k, graph_k)` each) and its search report into `parts/<i>/`; the merge joins the lists
//! in order and does the rest as a run in one piece (the recall of an approximate search
//! included, measured on the joined lists). With the exact search the merged files are byte
//! for byte those of `parts = 1`; see [`search::find_neighbours_of`].
//!
//! # Parts
//!
//! - [`directions`]: unit decoder rows, dead features marked.
//! - [`exact`]: exact top-k by blocked `gemm` products with a streaming top-k; working memory
//!   `block² × 4` bytes plus the answer, independent of the dictionary size.
//! - [`approximate`]: an inverted file (IVF-flat) for large dictionaries: spherical k-means
//!   cells, each query scanning its `nprobe` nearest cells with the same `gemm` tiles; working
//!   memory at most `n × nprobe × 8` bytes plus per-thread tiles (177 MiB for 262,144 × 576
//!   on 2 threads); and recall@k against the exact search.
//! - `kmeans` (private): the spherical k-means behind those cells.
//! - [`search`]: picks one of the two and reports what it did.
//! - [`louvain`]: Louvain clustering of the symmetric k-NN graph; modularity; adjusted Rand
//!   index.
//! - [`layout`]: a UMAP-style 2-D layout (fuzzy k-NN graph + SGD with negative sampling) and its
//!   neighbourhood preservation.
//! - [`labels`]: reading `labels.jsonl`; a cluster's most common label words.
//! - [`picture`]: the map as PNG and SVG.
//! - The files above are written and read through `monoscope_artifacts::cluster`.
//! - [`stage`]: the stage kind, its parameters and the order of work.
//! - [`rng`]: a small seeded generator; planted dictionaries for tests and benchmarks.
//!
//! Why our own layout and clustering: `umap-rs` 0.4 would bring ndarray, sprs, dashmap and a
//! builder macro crate for what is here ~250 lines over the neighbour lists we already have,
//! and `leiden-rs` 0.8 would be a dependency for ~200 lines of Louvain. Both parts are
//! checked by measured quality in the tests: neighbourhood preservation of the map, and the
//! adjusted Rand index of the clusters against planted groups.

pub mod approximate;
pub mod directions;
mod error;
pub mod exact;
mod kmeans;
pub mod labels;
pub mod layout;
pub mod louvain;
pub mod picture;
pub mod rng;
pub mod search;
pub mod stage;

pub use directions::Directions;
pub use error::ClusterError;
pub use exact::{Neighbour, exact_neighbours};
pub use search::{SearchMethod, SearchOptions, SearchReport, find_neighbours};
pub use stage::{Cluster, ClusterStageConfig};
