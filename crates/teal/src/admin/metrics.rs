//! `/metrics`: the registry's text, with the route gauges refreshed from the live route
//! snapshot at each scrape, in the classic Prometheus format unless the scraper asks for
//! OpenMetrics.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Response, header};

use super::context::Admin;
use crate::metrics::{
    Metrics, ModelLabels, PhaseLabels, PredictionLabels, RouteLabels, SlotLabels,
};
use crate::routing::RouteSnapshot;

/// Prometheus metrics. Like `/healthz`, readable without the token: the admin listener
/// is not public, and scrapers rarely carry one.
///
/// A scraper that asks for OpenMetrics gets it; anyone else gets the classic text format
/// (version 0.0.4), which `promtool check metrics` and older tools read.
pub(super) async fn metrics(
    State(admin): State<Arc<Admin>>,
    headers: axum::http::HeaderMap,
) -> Response<Body> {
    let open_metrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let text = render(&admin.metrics, &admin.routes.load());
    let (text, content_type) = if open_metrics {
        (
            text,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            classic_text(&text),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut response = Response::new(Body::from(text));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The route gauges (weights, shadow share, readiness) are read from the snapshot when
/// scraped, so the request path never updates them.
pub fn render(metrics: &Metrics, routes: &RouteSnapshot) -> String {
    let mut values: Vec<crate::metrics::ValueRow> = Vec::new();
    for model in routes.models.values() {
        let table = &model.table;
        let candidate_share =
            f64::from(table.candidate_weight) / f64::from(teal_core::routing::WHOLE);
        for color in [table.active, table.candidate()] {
            let share = if color == table.active {
                1.0 - candidate_share
            } else {
                candidate_share
            };
            let share = if model.slot(color).is_some() {
                share
            } else {
                0.0
            };
            metrics
                .route_weight
                .get_or_create(&RouteLabels {
                    model: model.name.clone(),
                    slot: color.to_string(),
                })
                .set(share);
        }
        metrics
            .shadow_share
            .get_or_create(&ModelLabels {
                model: model.name.clone(),
            })
            .set(f64::from(table.shadow) / f64::from(teal_core::routing::WHOLE));
        for slot in model.slots.iter().flatten() {
            let labels = SlotLabels {
                model: model.name.clone(),
                version: slot.version.clone(),
                slot: slot.color.to_string(),
            };
            metrics
                .slot_ready
                .get_or_create(&labels)
                .set(i64::from(slot.backend.ready()));
            // The slot's request, error and latency series, at 0 until it answers.
            slot.handles(metrics, &model.name);
            // The slot counts its predicted classes on the request path; the counters catch
            // up here. A slot loaded again starts from zero, and its counter waits until the
            // new slot's count passes it.
            let counts = slot.stats.snapshot();
            // The slots count their answers' values; a version in both slots is one series.
            if counts.values.iter().any(|n| *n > 0) {
                let labels = crate::metrics::VersionLabels {
                    model: model.name.clone(),
                    version: slot.version.clone(),
                };
                match values.iter_mut().find(|row| row.labels == labels) {
                    Some(row) => {
                        for (into, n) in row.counts.iter_mut().zip(&counts.values) {
                            *into += n;
                        }
                        row.sum += slot.stats.value_sum();
                    }
                    None => values.push(crate::metrics::ValueRow {
                        labels,
                        counts: counts.values.clone(),
                        sum: slot.stats.value_sum(),
                    }),
                }
            }
            for (class, count) in counts.classes.iter().enumerate() {
                if *count == 0 {
                    continue;
                }
                let counter = metrics.predictions.get_or_create(&PredictionLabels {
                    model: model.name.clone(),
                    version: slot.version.clone(),
                    class: class.to_string(),
                });
                let seen = counter.get();
                if *count > seen {
                    counter.inc_by(count - seen);
                }
            }
        }
        declare_model(metrics, &model.name);
    }
    metrics.values.set(values);
    metrics.encode()
}

/// Makes a model's counters and rollout phases exist (at 0 when nothing happened yet), so the
/// alert rules see a series before its first event: `increase()` over a series that appears
/// at 1 is 0, and the first rollback would raise no alert. Ratios whose 0 means something
/// (shadow agreement) are left absent until measured.
fn declare_model(metrics: &Metrics, model: &str) {
    let labels = ModelLabels {
        model: model.to_string(),
    };
    // Made, not read: each guard is let go at once.
    let _ = metrics.rollbacks.get_or_create(&labels);
    let _ = metrics.switches.get_or_create(&labels);
    for phase in teal_core::rollout::Phase::NAMES {
        let _ = metrics.rollout_phase.get_or_create(&PhaseLabels {
            model: model.to_string(),
            phase: phase.to_string(),
        });
    }
}

/// Turns OpenMetrics text into the classic Prometheus text format (0.0.4): a counter's
/// `# HELP` and `# TYPE` name its samples (`..._total`), and there is no `# EOF`.
pub fn classic_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 64);
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_by_their_samples_and_drops_eof() {
        let open = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{m=\"x\"} 3\n# HELP b Ready.\n# TYPE b gauge\nb 1\n# EOF\n";
        assert_eq!(
            classic_text(open),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{m=\"x\"} 3\n# HELP b Ready.\n# TYPE b gauge\nb 1\n"
        );
    }
}
