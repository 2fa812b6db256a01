//! Overrides from the environment, so a container or a test can move listeners and state
//! without editing the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Config;

/// Overrides from the environment, read through a trait so tests pass a map instead of
/// changing the process environment that other tests share.
pub trait Environment {
    /// The variable's value, or `None` when it is unset.
    fn get(&self, name: &str) -> Option<String>;
}

impl Environment for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl Config {
    /// Applies `TEAL_LISTEN`, `TEAL_ADMIN_LISTEN`, `TEAL_METRICS_LISTEN`, `TEAL_STATE_DIR`,
    /// `TEAL_FEEDBACK_TOKEN` and `TEAL_REQUEST_LOG` (`0` or `false` turns the request log
    /// off). Nothing here allows commands: `allow_commands` is the config file's alone.
    pub fn apply_environment(&mut self, env: &dyn Environment) {
        if let Some(flag) = env.get("TEAL_REQUEST_LOG") {
            self.server.request_log = !matches!(flag.trim(), "0" | "false" | "off" | "no");
        }
        if let Some(listen) = env.get("TEAL_LISTEN") {
            self.server.listen = listen;
        }
        if let Some(admin) = env.get("TEAL_ADMIN_LISTEN") {
            self.server.admin = admin;
        }
        if let Some(metrics) = env.get("TEAL_METRICS_LISTEN") {
            self.server.metrics_listen = Some(metrics).filter(|m| !m.trim().is_empty());
        }
        if let Some(grpc) = env.get("TEAL_GRPC_LISTEN") {
            self.server.grpc_listen = Some(grpc).filter(|g| !g.trim().is_empty());
        }
        if let Some(token) = env.get("TEAL_FEEDBACK_TOKEN") {
            self.server.feedback_token = Some(token.trim().to_string()).filter(|t| !t.is_empty());
        }
        if let Some(dir) = env.get("TEAL_STATE_DIR") {
            self.server.state_dir = PathBuf::from(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::Config;
    use crate::config::tests::EXAMPLE;

    #[test]
    fn environment_overrides_listeners() {
        let mut config = Config::parse(EXAMPLE).unwrap();
        let env = BTreeMap::from([("TEAL_LISTEN".to_string(), "0.0.0.0:80".to_string())]);
        config.apply_environment(&env);
        assert_eq!(config.server.listen, "0.0.0.0:80");
        assert_eq!(config.server.admin, "127.0.0.1:0");
    }
}
