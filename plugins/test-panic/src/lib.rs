//! A plugin whose stage panics: the host must report a stage error naming the plugin and carry on.

use monoscope_plugin_abi::sdk::{PluginContext, PluginStage, port};
use monoscope_plugin_abi::wire::PortDecl;

#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {}

#[derive(Debug)]
pub struct Panicking;

impl PluginStage for Panicking {
    type Config = Config;
    const KIND: &'static str = "test-plugin-panic";
    const DOC: &'static str = "panics when run";
    fn inputs() -> Vec<PortDecl> {
        vec![]
    }
    fn outputs() -> Vec<PortDecl> {
        vec![port("out", "test-sum", "never produced")]
    }
    fn run(_: Config, _: &mut PluginContext<'_>) -> Result<(), String> {
        panic!("deliberate panic inside the plugin")
    }
}

monoscope_plugin_abi::export_plugin!(name: "test-panic", version: "0.1.0", stages: [Panicking]);
