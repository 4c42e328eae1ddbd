//! Graph clustering of the k-nearest-neighbour graph: Louvain (Blondel et al. 2008) with a
//! resolution parameter, and the scores used to judge it (modularity, adjusted Rand index).
//!
//! The stage clusters the fuzzy k-nearest-neighbour graph of the layout
//! ([`crate::layout::fuzzy_edges`]: each feature's neighbours weighted relative to its own
//! nearest, as scanpy clusters UMAP's connectivities); [`Graph::from_neighbours`] builds the
//! plainer graph with weight `max(cosine, 0)`. Louvain
//! moves nodes between communities while modularity
//! `Q = Σ_c [in_c / 2m − γ (tot_c / 2m)²]` rises, then merges each community into one node
//! and repeats until nothing moves. Nodes are visited in a seeded random order, so a run is
//! reproducible. Isolated nodes (dead features) stay in clusters of their own.
//!
//! Louvain rather than Leiden: it is short enough to keep here, without a dependency; Leiden's
//! refinement step (which guarantees connected communities) is not implemented.

use crate::exact::Neighbour;
use crate::rng::SplitMix64;

/// A weighted undirected graph in compressed rows, every edge stored in both directions.
#[derive(Debug, Clone)]
pub struct Graph {
    offsets: Vec<usize>,
    targets: Vec<u32>,
    weights: Vec<f64>,
    /// Weight of each node's loop onto itself (it counts twice in the degree).
    self_loops: Vec<f64>,
}

impl Graph {
    /// The symmetric k-nearest-neighbour graph of `lists` (one list per node).
    pub fn from_neighbours(lists: &[Vec<Neighbour>]) -> Graph {
        let mut edges: Vec<(u32, u32, f64)> = Vec::new();
        for (i, list) in lists.iter().enumerate() {
            for n in list {
                let w = f64::from(n.cosine.max(0.0));
                let (a, b) = (i as u32, n.feature);
                if a != b && w > 0.0 {
                    edges.push((a.min(b), a.max(b), w));
                }
            }
        }
        edges.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)).then(y.2.total_cmp(&x.2)));
        edges.dedup_by(|later, first| (later.0, later.1) == (first.0, first.1));
        let both: Vec<(u32, u32, f64)> = edges
            .iter()
            .flat_map(|&(a, b, w)| [(a, b, w), (b, a, w)])
            .collect();
        Graph::from_directed(lists.len(), both, vec![0.0; lists.len()])
    }

    /// The graph of undirected weighted edges `(i, j, w)` over `nodes` nodes, each edge listed
    /// once; non-positive weights are dropped.
    pub fn from_edges(nodes: usize, edges: &[(u32, u32, f32)]) -> Graph {
        let both: Vec<(u32, u32, f64)> = edges
            .iter()
            .filter(|e| e.0 != e.1 && e.2 > 0.0)
            .flat_map(|&(a, b, w)| [(a, b, f64::from(w)), (b, a, f64::from(w))])
            .collect();
        Graph::from_directed(nodes, both, vec![0.0; nodes])
    }

    /// `edges` must already hold both directions of every edge.
    fn from_directed(nodes: usize, mut edges: Vec<(u32, u32, f64)>, self_loops: Vec<f64>) -> Self {
        edges.sort_by_key(|e| (e.0, e.1));
        let mut offsets = vec![0usize; nodes + 1];
        for e in &edges {
            offsets[e.0 as usize + 1] += 1;
        }
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        Graph {
            offsets,
            targets: edges.iter().map(|e| e.1).collect(),
            weights: edges.iter().map(|e| e.2).collect(),
            self_loops,
        }
    }

    pub fn nodes(&self) -> usize {
        self.self_loops.len()
    }

    fn edges_of(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let range = self.offsets[i]..self.offsets[i + 1];
        self.targets[range.clone()]
            .iter()
            .zip(&self.weights[range])
            .map(|(&t, &w)| (t as usize, w))
    }

    fn degree(&self, i: usize) -> f64 {
        self.edges_of(i).map(|(_, w)| w).sum::<f64>() + 2.0 * self.self_loops[i]
    }

    /// Modularity of `assignment` at resolution `gamma`; 0 for a graph without edges.
    pub fn modularity(&self, assignment: &[u32], gamma: f64) -> f64 {
        let communities = assignment
            .iter()
            .map(|&c| c as usize + 1)
            .max()
            .unwrap_or(0);
        let (mut inside, mut total) = (vec![0.0; communities], vec![0.0; communities]);
        for i in 0..self.nodes() {
            let c = assignment[i] as usize;
            total[c] += self.degree(i);
            inside[c] += 2.0 * self.self_loops[i];
            for (j, w) in self.edges_of(i) {
                if assignment[j] as usize == c {
                    inside[c] += w;
                }
            }
        }
        let two_m: f64 = total.iter().sum();
        if two_m <= 0.0 {
            return 0.0;
        }
        inside
            .iter()
            .zip(&total)
            .map(|(i, t)| i / two_m - gamma * (t / two_m).powi(2))
            .sum()
    }
}

/// A clustering: `assignment[node]` is a cluster id, ids `0..count` numbered by descending
/// size (ties: smallest member first).
#[derive(Debug, Clone)]
pub struct Clustering {
    pub assignment: Vec<u32>,
    pub count: usize,
    pub modularity: f64,
}

/// Louvain at resolution `gamma` (1 = classic modularity; larger: more, smaller clusters).
pub fn louvain(graph: &Graph, gamma: f64, seed: u64) -> Clustering {
    let mut rng = SplitMix64::new(seed);
    let mut assignment: Vec<u32> = (0..graph.nodes() as u32).collect();
    let mut level = graph.clone();
    loop {
        let (local, moved) = move_nodes(&level, gamma, &mut rng);
        if !moved {
            break;
        }
        let (renumbered, count) = renumber(&local);
        for c in assignment.iter_mut() {
            *c = renumbered[*c as usize];
        }
        level = aggregate(&level, &renumbered, count);
    }
    let (assignment, count) = by_size(&assignment);
    let modularity = graph.modularity(&assignment, gamma);
    Clustering {
        assignment,
        count,
        modularity,
    }
}

/// One level of local moves; returns the community of each node and whether any node moved.
fn move_nodes(graph: &Graph, gamma: f64, rng: &mut SplitMix64) -> (Vec<u32>, bool) {
    let n = graph.nodes();
    let degree: Vec<f64> = (0..n).map(|i| graph.degree(i)).collect();
    let two_m: f64 = degree.iter().sum();
    let mut community: Vec<u32> = (0..n as u32).collect();
    if two_m <= 0.0 {
        return (community, false);
    }
    let mut total = degree.clone();
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let mut link = vec![0.0f64; n];
    let mut touched: Vec<usize> = Vec::new();
    let mut any_moved = false;
    loop {
        let mut moves = 0usize;
        for &i in &order {
            let own = community[i] as usize;
            for (j, w) in graph.edges_of(i) {
                let c = community[j] as usize;
                if link[c] == 0.0 {
                    touched.push(c);
                }
                link[c] += w;
            }
            total[own] -= degree[i];
            let gain = |c: usize, link: &[f64], total: &[f64]| {
                link[c] - gamma * total[c] * degree[i] / two_m
            };
            let mut best = own;
            let mut best_gain = gain(own, &link, &total);
            for &c in &touched {
                let g = gain(c, &link, &total);
                // Strictly better by a margin, so rounding cannot make nodes oscillate.
                if g > best_gain + 1e-12 {
                    best = c;
                    best_gain = g;
                }
            }
            total[best] += degree[i];
            if best != own {
                community[i] = best as u32;
                moves += 1;
            }
            for &c in &touched {
                link[c] = 0.0;
            }
            touched.clear();
        }
        if moves == 0 {
            break;
        }
        any_moved = true;
    }
    (community, any_moved)
}

/// Community ids made dense (`0..count`), in order of first appearance.
fn renumber(community: &[u32]) -> (Vec<u32>, usize) {
    let mut map = vec![u32::MAX; community.len()];
    let mut next = 0u32;
    let renumbered = community
        .iter()
        .map(|&c| {
            if map[c as usize] == u32::MAX {
                map[c as usize] = next;
                next += 1;
            }
            map[c as usize]
        })
        .collect();
    (renumbered, next as usize)
}

/// The graph of communities: one node per community, edge weights summed, internal weight
/// kept as self-loops.
fn aggregate(graph: &Graph, community: &[u32], count: usize) -> Graph {
    let mut self_loops = vec![0.0; count];
    let mut edges: Vec<(u32, u32, f64)> = Vec::new();
    for i in 0..graph.nodes() {
        let a = community[i];
        self_loops[a as usize] += graph.self_loops[i];
        for (j, w) in graph.edges_of(i) {
            let b = community[j];
            if a == b {
                // Each internal edge is seen from both ends; a loop counts its weight once.
                self_loops[a as usize] += w / 2.0;
            } else {
                edges.push((a, b, w));
            }
        }
    }
    edges.sort_by_key(|e| (e.0, e.1));
    let mut merged: Vec<(u32, u32, f64)> = Vec::with_capacity(edges.len());
    for e in edges {
        match merged.last_mut() {
            Some(last) if (last.0, last.1) == (e.0, e.1) => last.2 += e.2,
            _ => merged.push(e),
        }
    }
    Graph::from_directed(count, merged, self_loops)
}

/// Renumbers clusters by descending size, ties by smallest member.
fn by_size(assignment: &[u32]) -> (Vec<u32>, usize) {
    let (dense, count) = renumber(assignment);
    let mut size = vec![0usize; count];
    for &c in &dense {
        size[c as usize] += 1;
    }
    // Dense ids are in order of first appearance, i.e. of smallest member.
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|&c| (std::cmp::Reverse(size[c]), c));
    let mut rank = vec![0u32; count];
    for (r, &c) in order.iter().enumerate() {
        rank[c] = r as u32;
    }
    (dense.iter().map(|&c| rank[c as usize]).collect(), count)
}

/// Adjusted Rand index of two labelings (Hubert and Arabie 1985): 1 for identical partitions,
/// about 0 for independent ones.
pub fn adjusted_rand_index(a: &[u32], b: &[u32]) -> f64 {
    assert_eq!(a.len(), b.len(), "labelings of different lengths");
    let choose2 = |x: f64| x * (x - 1.0) / 2.0;
    let mut table = std::collections::HashMap::<(u32, u32), f64>::new();
    let mut rows = std::collections::HashMap::<u32, f64>::new();
    let mut cols = std::collections::HashMap::<u32, f64>::new();
    for (&x, &y) in a.iter().zip(b) {
        *table.entry((x, y)).or_default() += 1.0;
        *rows.entry(x).or_default() += 1.0;
        *cols.entry(y).or_default() += 1.0;
    }
    let index: f64 = table.values().map(|&n| choose2(n)).sum();
    let sum_rows: f64 = rows.values().map(|&n| choose2(n)).sum();
    let sum_cols: f64 = cols.values().map(|&n| choose2(n)).sum();
    let expected = sum_rows * sum_cols / choose2(a.len() as f64);
    let max = (sum_rows + sum_cols) / 2.0;
    if (max - expected).abs() < f64::EPSILON {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of_cliques(cliques: usize, size: usize) -> (Vec<Vec<Neighbour>>, Vec<u32>) {
        let n = cliques * size;
        let lists = (0..n)
            .map(|i| {
                let c = i / size;
                let mut list: Vec<Neighbour> = (c * size..(c + 1) * size)
                    .filter(|&j| j != i)
                    .map(|j| Neighbour {
                        feature: j as u32,
                        cosine: 0.9,
                    })
                    .collect();
                if i % size == 0 {
                    list.push(Neighbour {
                        feature: (((c + 1) % cliques) * size + 1) as u32,
                        cosine: 0.1,
                    });
                }
                list
            })
            .collect();
        (lists, (0..n).map(|i| (i / size) as u32).collect())
    }

    #[test]
    fn louvain_finds_the_cliques_of_a_ring() {
        let (lists, truth) = ring_of_cliques(12, 6);
        let graph = Graph::from_neighbours(&lists);
        let clustering = louvain(&graph, 1.0, 3);
        assert_eq!(clustering.count, 12);
        assert!((adjusted_rand_index(&clustering.assignment, &truth) - 1.0).abs() < 1e-12);
        assert!(clustering.modularity > 0.8, "{}", clustering.modularity);
        // The singleton partition scores below it.
        let singletons: Vec<u32> = (0..truth.len() as u32).collect();
        assert!(graph.modularity(&singletons, 1.0) < clustering.modularity);
    }

    #[test]
    fn isolated_nodes_stay_alone_and_ids_follow_size() {
        let (mut lists, _) = ring_of_cliques(3, 4);
        lists.push(Vec::new()); // a dead feature
        let clustering = louvain(&Graph::from_neighbours(&lists), 1.0, 0);
        assert_eq!(clustering.count, 4);
        assert_eq!(clustering.assignment[12], 3);
        assert!(clustering.assignment[..12].iter().all(|&c| c < 3));
    }

    #[test]
    fn adjusted_rand_index_extremes() {
        let a = [0, 0, 1, 1, 2, 2];
        assert!((adjusted_rand_index(&a, &[5, 5, 3, 3, 9, 9]) - 1.0).abs() < 1e-12);
        let ari = adjusted_rand_index(&a, &[0, 1, 2, 0, 1, 2]);
        assert!(ari < 0.0, "{ari}");
    }
}
