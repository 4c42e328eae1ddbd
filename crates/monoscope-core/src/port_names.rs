//! The port names of the built-in stages. A pipeline connects `<stage>.<port>`, so stages that
//! take or give the same kind of thing use the same name; each stage's description lists its
//! own ports.

/// A model checkpoint (artifact `model`).
pub const MODEL: &str = "model";
/// A text corpus (artifact `corpus`).
pub const CORPUS: &str = "corpus";
/// An activation store (artifact `activation-store`).
pub const STORE: &str = "store";
/// Batches of activations as a capture produces them (stream `activations`).
pub const ACTIVATIONS: &str = "activations";
/// An SAE directory (artifact `sae`).
pub const SAE: &str = "sae";
/// A second SAE on the same hook (artifact `sae`), for cross-SAE neighbours.
pub const OTHER_SAE: &str = "other_sae";
/// An autointerp-label stage's outputs (artifact `labels`).
pub const LABELS: &str = "labels";
/// A cluster stage's outputs (artifact `clusters`).
pub const CLUSTERS: &str = "clusters";
/// A steer stage's report, as the steer stage gives it (artifact `steering-report`).
pub const REPORT: &str = "report";
/// A steering report, as the browser takes it (artifact `steering-report`).
pub const STEERING: &str = "steering";
/// A feature browser site (artifact `site`).
pub const SITE: &str = "site";
/// A split stage's outputs: feature splitting across a family of SAEs (artifact `split`).
pub const SPLIT: &str = "split";
/// A coverage stage's outputs: concept coverage against frequency (artifact `coverage`).
pub const COVERAGE: &str = "coverage";
