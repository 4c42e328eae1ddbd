//! The feature browser: a self-contained static site over one run, in the spirit of
//! Neuronpedia and SAEDashboard, that works offline and opens straight from disk.
//!
//! - [`RunFiles`] ([`inputs`]): the files the other stages wrote — the SAE's `cfg.json` and the
//!   train stage's `eval.json`, the label stage's `evidence.jsonl` / `labels.jsonl`, the
//!   cluster stage's `neighbours.jsonl` / `clusters.json` / `map.json`, the steer stage's
//!   `report.json` (with `attributions.json` and `contrasts.json` beside it), the split stage's
//!   `split.json` and the coverage stage's `coverage.json` — each optional except the SAE, so
//!   that a site can be built from whatever a run has.
//! - [`write_site`] ([`site`]): writes `index.html`, the script and style, and the data as
//!   small JavaScript files (`data/index.js`, `data/features/NNNN.js` per chunk of features,
//!   `data/map.js`, `data/steering.js`, and per analysis a run has `data/families.js`,
//!   `data/coverage.js`, `data/attribution.js`, `data/contrast.js`). Data travel as scripts rather than JSON so that the
//!   site works from `file://`, where browsers refuse `fetch`; a feature page loads only its
//!   own chunk, so 16k features stay fast.
//! - [`serve`] ([`mod@serve`]): a small static file server on 127.0.0.1 for `monoscope serve`.
//! - The `browser` stage ([`stage`]): builds the site at the end of a pipeline and writes the
//!   run's headline summary (`summary.txt`) that `monoscope run` prints.
//!
//! - `testing` (feature `testing`): a synthetic run with every file the site reads, for tests.
//!
//! Invariant: corpus text, labels and every other string from the run are untrusted. The page
//! script only ever puts them into the document as text (`textContent`, attribute values set
//! through the DOM), never as markup; the browser test checks that a `<script>` in a context
//! shows as text.

mod analyses;
mod error;
pub mod inputs;
pub mod serve;
pub mod site;
pub mod stage;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::BrowserError;
pub use inputs::RunFiles;
pub use serve::serve;
pub use site::{SiteSummary, write_site};
