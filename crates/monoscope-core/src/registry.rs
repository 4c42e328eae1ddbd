use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::stage::StageFactory;

/// A built-in stage kind, submitted at link time by [`crate::register_stage!`].
#[derive(Debug)]
pub struct StageRegistration {
    pub factory: &'static dyn StageFactory,
}

impl std::fmt::Debug for dyn StageFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StageFactory({})", self.description().kind)
    }
}

inventory::collect!(StageRegistration);

/// Registers a [`crate::Stage`] type as a built-in stage kind.
///
/// Registration happens when the binary starts; the binary must reference the crate that holds
/// the stage (for example with `use capture_crate as _;`) or the linker may drop it.
#[macro_export]
macro_rules! register_stage {
    ($stage:ty) => {
        $crate::inventory::submit! {
            $crate::StageRegistration {
                factory: &$crate::TypedFactory::<$stage>(::core::marker::PhantomData),
            }
        }
    };
}

/// Where a stage kind comes from, shown by `monoscope stages`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "origin")]
pub enum StageOrigin {
    Builtin,
    Plugin {
        path: PathBuf,
        name: String,
        version: String,
    },
}

/// Why a kind could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("stage kind `{kind}` from {new} collides with the {existing} kind of the same name")]
    Collision {
        kind: String,
        existing: String,
        new: String,
    },
}

/// Every stage kind this process knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, (Arc<dyn StageFactory>, StageOrigin)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

/// A `'static` factory reference used where the registry wants shared ownership.
struct Static(&'static dyn StageFactory);

impl StageFactory for Static {
    fn description(&self) -> crate::StageDescription {
        self.0.description()
    }
    fn schema(&self) -> serde_json::Value {
        self.0.schema()
    }
    fn parts(&self) -> Option<&'static str> {
        self.0.parts()
    }
    fn configure(
        &self,
        params: &figment::Figment,
    ) -> Result<crate::ConfiguredStage, crate::ConfigureError> {
        self.0.configure(params)
    }
}

impl Registry {
    /// The built-in kinds linked into this binary.
    pub fn builtin() -> Self {
        let mut registry = Registry::default();
        for registration in inventory::iter::<StageRegistration> {
            let factory: Arc<dyn StageFactory> = Arc::new(Static(registration.factory));
            // Two built-ins with one name is a programming error caught by the registry test.
            let _ = registry.register(factory, StageOrigin::Builtin);
        }
        registry
    }

    /// Adds a kind; refuses a name that is already taken.
    pub fn register(
        &mut self,
        factory: Arc<dyn StageFactory>,
        origin: StageOrigin,
    ) -> Result<(), RegistryError> {
        let kind = factory.description().kind.into_owned();
        if let Some((_, existing)) = self.kinds.get(&kind) {
            return Err(RegistryError::Collision {
                kind,
                existing: describe_origin(existing),
                new: describe_origin(&origin),
            });
        }
        self.kinds.insert(kind, (factory, origin));
        Ok(())
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn StageFactory>> {
        self.kinds.get(kind).map(|(factory, _)| factory)
    }

    pub fn origin(&self, kind: &str) -> Option<&StageOrigin> {
        self.kinds.get(kind).map(|(_, origin)| origin)
    }

    /// Kind names in alphabetical order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// The known kind closest to a misspelt one, if any is close enough to be a likely typo.
    pub fn closest(&self, kind: &str) -> Option<&str> {
        closest_name(kind, self.kinds())
    }
}

fn describe_origin(origin: &StageOrigin) -> String {
    match origin {
        StageOrigin::Builtin => "built-in".to_string(),
        StageOrigin::Plugin {
            path,
            name,
            version,
        } => {
            format!("plugin {name} {version} ({})", path.display())
        }
    }
}

/// The candidate most similar to `name`, if it is similar enough to suggest.
pub fn closest_name<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
