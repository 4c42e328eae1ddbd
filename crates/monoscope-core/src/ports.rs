use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use monoscope_artifacts::ArtifactKind;

/// The kind of item a streaming port carries, e.g. `activations`.
///
/// A name rather than an enum so that plugins can define their own kinds; two ports connect only
/// when the names are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamKind(pub Cow<'static, str>);

impl StreamKind {
    /// Batches of activations with their token ids ([`crate::ActivationBatch`]).
    pub const ACTIVATIONS: StreamKind = StreamKind(Cow::Borrowed("activations"));
}

impl StreamKind {
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        StreamKind(name.into())
    }
}

/// What a port carries: a stream of items, or artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "carries", content = "kind")]
pub enum PortType {
    Stream(StreamKind),
    Artifact(ArtifactKind),
}

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortType::Stream(kind) => write!(f, "stream of {}", kind.0),
            PortType::Artifact(kind) => write!(f, "artifact `{}`", kind.0),
        }
    }
}

/// A named, typed input or output of a stage kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub name: Cow<'static, str>,
    #[serde(rename = "type")]
    pub ty: PortType,
    /// An input that must be connected; optional inputs may be left out of the pipeline file.
    pub required: bool,
    pub doc: Cow<'static, str>,
}

impl PortSpec {
    pub const fn stream(name: &'static str, kind: StreamKind, doc: &'static str) -> Self {
        PortSpec {
            name: Cow::Borrowed(name),
            ty: PortType::Stream(kind),
            required: true,
            doc: Cow::Borrowed(doc),
        }
    }

    pub const fn artifact(name: &'static str, kind: ArtifactKind, doc: &'static str) -> Self {
        PortSpec {
            name: Cow::Borrowed(name),
            ty: PortType::Artifact(kind),
            required: true,
            doc: Cow::Borrowed(doc),
        }
    }

    /// The same port, but an input that may be left unconnected.
    pub const fn optional(mut self) -> Self {
        self.required = false;
        self
    }
}
