//! How the CLI shows things to people: a model's status, a rollout, a gate report, a
//! switch. `--json` prints what the admin API answered instead.

use super::*;

/// The report as a table: gate, value, threshold, verdict, and why.
pub fn render_report(report: &crate::control::validation::Report) -> String {
    let mut out = format!(
        "{}: candidate {} ({}) against live {} ({}), {} samples from {}\n\n",
        report.model,
        report.candidate.version,
        report.candidate.slot,
        report.live.version,
        report.live.slot,
        report.samples,
        report.source
    );
    out.push_str(&format!(
        "  {:<10} {:>10}  {:<34} {:<13} {}\n",
        "GATE", "VALUE", "THRESHOLD", "VERDICT", "EVIDENCE"
    ));
    for gate in &report.gates {
        let value = gate.value.map_or("-".to_string(), |v| {
            if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.4}")
            }
        });
        out.push_str(&format!(
            "  {:<10} {:>10}  {:<34} {:<13} {}\n",
            gate.gate,
            value,
            gate.threshold,
            gate.verdict.as_str().to_uppercase(),
            gate.reason
        ));
    }
    out.push_str(&format!(
        "\nverdict: {} (in {} ms)\n",
        report.verdict.as_str().to_uppercase(),
        report.duration_ms
    ));
    if report.verdict == teal_core::gates::Verdict::Inconclusive {
        out.push_str(
            "the evidence could not decide: give more of it (a larger --holdout, --shadow N on live traffic, or capture_rate in the config and --replay N), or approve by hand with teal promote\n",
        );
    }
    out
}

pub(crate) fn print_rollout(answer: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
        return Ok(());
    }
    let view: crate::routing::RolloutView = serde_json::from_value(answer.clone())?;
    print!("{}", render_rollout(&view));
    Ok(())
}

/// A rollout in a few lines: id, version, strategy, phase, traffic, timer, last checks.
pub fn render_rollout(view: &crate::routing::RolloutView) -> String {
    let r = &view.rollout;
    let mut out = format!(
        "rollout #{} of {} {}: {} ({}), since {}\n",
        r.id,
        r.model,
        r.version,
        view.phase_name.replace('_', " "),
        view.strategy,
        crate::state::store::format_time(r.since_ms)
    );
    out.push_str(&format!(
        "  traffic: live {}{}{}\n",
        r.route.active,
        if r.route.weight > 0 {
            format!(
                ", {}% to {}",
                f64::from(r.route.weight) / 100.0,
                r.route.active.other()
            )
        } else {
            String::new()
        },
        if r.route.shadow > 0 {
            format!(", mirroring {}%", f64::from(r.route.shadow) / 100.0)
        } else {
            String::new()
        }
    ));
    if let Some(at) = view.next_at_ms {
        let left = (at - crate::state::store::now_ms()).max(0) as f64 / 1000.0;
        out.push_str(&format!("  next step in {left:.0} s\n"));
    }
    if !r.last_check.is_empty() {
        out.push_str("  checks:");
        for o in &r.last_check {
            out.push_str(&format!(" {} {} ({});", o.rule, o.verdict, o.detail));
        }
        out.push('\n');
    }
    if let Some(outcome) = &r.outcome {
        out.push_str(&format!("  outcome: {outcome}\n"));
    }
    if let Some(waiting) = &r.waiting {
        out.push_str(&format!("  waiting: {waiting}\n"));
    }
    if view.phase_name == "awaiting_approval" || r.waiting.is_some() {
        out.push_str(&format!(
            "  approve with: teal promote {}   or stop with: teal abort {}\n",
            r.model, r.model
        ));
    }
    out
}

pub(crate) fn tensor_text(t: &TensorSpec) -> String {
    let dims: Vec<String> = t.shape.iter().map(ToString::to_string).collect();
    format!("{} {} [{}]", t.name, t.datatype, dims.join(", "))
}

pub(crate) fn render_status(m: &ModelStatus) -> String {
    let mut out = format!(
        "{}: live on {} ({}), route generation {}",
        m.name,
        m.live,
        m.live_version.as_deref().unwrap_or("-"),
        m.generation
    );
    if m.candidate_weight > 0 {
        out.push_str(&format!(
            ", canary {}% to {}",
            f64::from(m.candidate_weight) / 100.0,
            m.live.other()
        ));
    }
    if m.shadow > 0 {
        out.push_str(&format!(
            ", mirroring {}% to {}",
            f64::from(m.shadow) / 100.0,
            m.live.other()
        ));
    }
    if let Some(back) = m.rollback_to {
        out.push_str(&format!(", rollback goes to {back}"));
    }
    out.push('\n');
    out.push_str(&format!(
        "  {:<6} {:<10} {:<8} {:<16} {}\n",
        "SLOT", "VERSION", "KIND", "STATE", "INPUTS"
    ));
    for s in &m.slots {
        let state = format!(
            "{}, {}",
            if s.live { "live" } else { "standby" },
            if s.ready { "ready" } else { "not ready" }
        );
        let inputs: Vec<String> = s.inputs.iter().map(tensor_text).collect();
        out.push_str(&format!(
            "  {:<6} {:<10} {:<8} {:<16} {}\n",
            s.color.as_str(),
            s.version,
            s.kind,
            state,
            if inputs.is_empty() {
                "(not published by the server)".to_string()
            } else {
                inputs.join(", ")
            }
        ));
        if let Some(e) = &s.execution {
            let optimization = serde_json::to_value(e.optimization)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push_str(&format!(
                "         {} worker{}, {} intra-op and {} inter-op thread{} each, graph optimisation {optimization}\n",
                e.workers,
                if e.workers == 1 { "" } else { "s" },
                e.intra_op_threads,
                e.inter_op_threads,
                if e.inter_op_threads == 1 { "" } else { "s" },
            ));
            if let Some(b) = &e.batching {
                let preferred = if b.preferred_batch_sizes.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", preferred sizes {}",
                        b.preferred_batch_sizes
                            .iter()
                            .map(usize::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                out.push_str(&format!(
                    "         batching: up to {} rows a call, waiting up to {} us for a batch to fill{preferred}\n",
                    b.max_batch_size, b.max_queue_delay_us
                ));
            }
            if let Some(reason) = &e.batching_off {
                out.push_str(&format!("         batching off: {reason}\n"));
            }
        }
        if let Some(p) = &s.provenance {
            let run = p
                .run_id
                .as_ref()
                .map(|r| format!(", run {r}"))
                .unwrap_or_default();
            let resolved = if p.resolved == p.source {
                String::new()
            } else {
                format!(" ({})", p.resolved)
            };
            let digest = if p.sha256.is_empty() {
                String::new()
            } else {
                format!(", sha256 {}", p.sha256)
            };
            out.push_str(&format!(
                "         from {}{resolved}{run}{digest}\n",
                p.source
            ));
        }
        if let Some(p) = &s.process {
            let state = if p.running {
                "running".to_string()
            } else {
                format!("exited: {}", p.exit.clone().unwrap_or_default())
            };
            out.push_str(&format!(
                "         process {} on port {} ({state}): {}\n",
                p.pid, p.port, p.command
            ));
        }
        for r in &s.replicas {
            let state = match (r.ready, r.ejected) {
                (_, true) => "ejected",
                (true, false) => "ready",
                (false, false) => "not ready",
            };
            out.push_str(&format!(
                "         replica {} {state}, {} in flight, {} requests, {} failed\n",
                r.url, r.outstanding, r.requests, r.failures
            ));
        }
        if let Some(c) = &s.cache {
            out.push_str(&format!(
                "         cache {} entries, {} hits, {} misses\n",
                c.entries, c.hits, c.misses
            ));
        }
    }
    if let Some(rollout) = &m.rollout {
        out.push_str(&render_rollout(rollout));
    }
    out
}

pub(crate) fn print_switch(
    answer: &serde_json::Value,
    json: bool,
    verb: &str,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
        return Ok(());
    }
    let outcome: SwitchOutcome = serde_json::from_value(answer.clone())?;
    if outcome.changed {
        println!(
            "{}: {verb} {} ({}) -> {} ({}), route generation {}",
            outcome.model,
            outcome.from,
            outcome.from_version,
            outcome.to,
            outcome.to_version,
            outcome.generation
        );
        println!("undo with: teal rollback {}", outcome.model);
    } else {
        println!(
            "{}: {} ({}) is already live; nothing changed",
            outcome.model, outcome.to, outcome.to_version
        );
    }
    Ok(())
}
