//! The resources gate.

use serde_json::json;

use super::result::result;
use super::{Gate, GateConfig, GateResult, Verdict};

/// What teal could see of the candidate's server process during a validation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResourceUse {
    /// Resident memory of the server's process group at the end, MiB.
    pub rss_mb: f64,
    /// CPU time it used divided by the wall time, in cores.
    pub cpu_cores: f64,
}

/// The candidate's server stays under the configured memory and CPU limits. Runs only when a
/// limit is set; inconclusive when teal cannot see the server's process (in-process or remote).
pub fn resources(used: Option<ResourceUse>, config: &GateConfig) -> Option<GateResult> {
    if config.max_rss_mb.is_none() && config.max_cpu_cores.is_none() {
        return None;
    }
    let limits: Vec<String> = [
        config.max_rss_mb.map(|m| format!("rss <= {m} MiB")),
        config.max_cpu_cores.map(|c| format!("cpu <= {c} cores")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let threshold = limits.join(", ");
    let Some(used) = used else {
        return Some(result(
            Gate::Resources,
            Verdict::Inconclusive,
            None,
            threshold,
            0,
            "teal cannot see this slot's process (it is in-process or remote)".into(),
            json!({}),
        ));
    };
    let mut over = Vec::new();
    if let Some(max) = config.max_rss_mb
        && used.rss_mb > max
    {
        over.push(format!(
            "resident memory {:.1} MiB is over {max} MiB",
            used.rss_mb
        ));
    }
    if let Some(max) = config.max_cpu_cores
        && used.cpu_cores > max
    {
        over.push(format!("CPU {:.2} cores is over {max}", used.cpu_cores));
    }
    let evidence = json!({ "rss_mb": used.rss_mb, "cpu_cores": used.cpu_cores });
    Some(if over.is_empty() {
        result(
            Gate::Resources,
            Verdict::Pass,
            Some(used.rss_mb),
            threshold,
            1,
            format!(
                "{:.1} MiB resident, {:.2} cores",
                used.rss_mb, used.cpu_cores
            ),
            evidence,
        )
    } else {
        result(
            Gate::Resources,
            Verdict::Fail,
            Some(used.rss_mb),
            threshold,
            1,
            over.join("; "),
            evidence,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_run_only_with_limits_and_fail_over_them() {
        let used = Some(ResourceUse {
            rss_mb: 300.0,
            cpu_cores: 0.5,
        });
        assert!(resources(used, &GateConfig::default()).is_none());
        let limited = GateConfig {
            max_rss_mb: Some(256.0),
            ..GateConfig::default()
        };
        assert_eq!(resources(used, &limited).unwrap().verdict, Verdict::Fail);
        assert_eq!(
            resources(None, &limited).unwrap().verdict,
            Verdict::Inconclusive
        );
        let roomy = GateConfig {
            max_rss_mb: Some(512.0),
            max_cpu_cores: Some(1.0),
            ..GateConfig::default()
        };
        assert_eq!(resources(used, &roomy).unwrap().verdict, Verdict::Pass);
    }
}
