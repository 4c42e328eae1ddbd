//! A plugin whose stage returns an error, and whose config validation rejects `limit = 0`.

use monoscope_plugin_abi::sdk::{PluginContext, PluginStage, port};
use monoscope_plugin_abi::wire::PortDecl;

#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "one")]
    pub limit: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug)]
pub struct Failing;

impl PluginStage for Failing {
    type Config = Config;
    const KIND: &'static str = "test-plugin-error";
    const DOC: &'static str = "fails when run";
    fn inputs() -> Vec<PortDecl> {
        vec![]
    }
    fn outputs() -> Vec<PortDecl> {
        vec![port("out", "test-sum", "never produced")]
    }
    fn validate(config: &Config) -> Vec<(String, String)> {
        if config.limit == 0 {
            vec![("limit".into(), "= 0: expected at least 1".into())]
        } else {
            vec![]
        }
    }
    fn run(config: Config, _: &mut PluginContext<'_>) -> Result<(), String> {
        Err(format!("deliberate failure (limit {})", config.limit))
    }
}

monoscope_plugin_abi::export_plugin!(name: "test-error", version: "0.1.0", stages: [Failing]);
