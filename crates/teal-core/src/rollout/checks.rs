//! The operator's own checks in a rollout, as the config file names them: Prometheus
//! analyses (`[[model.rollout.analysis]]`), webhooks (`[[model.rollout.webhook]]`) and smoke
//! tests (`[[model.rollout.smoke_test]]`). The binary runs them (`control/checks.rs`); here
//! they are parsed, checked and, for an analysis, judged.
//!
//! They reach network addresses and run commands, so they come only from the config file:
//! the admin API cannot set them on a rollout, and a resumed rollout takes them from the
//! config file again, not from the state file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::duration_ms;
use crate::gates::Verdict;

/// Where an analysis is evaluated.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// With the gates: before the switch (or the first canary step), and at a canary step
    /// that runs its gates.
    Gates,
    /// Through every canary step, as a rollback rule.
    Canary,
    /// Through the bake after the switch, as a rollback rule.
    Bake,
}

/// A PromQL query judged by a condition, at an interval, where `at` says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// Names the analysis in outcomes, the audit trail and the status.
    pub name: String,
    /// An instant query; `{model}`, `{version}`, `{slot}` and `{old_version}` are replaced by
    /// the candidate's (escaped for a PromQL string).
    pub query: String,
    /// What every series of the result must satisfy, like `"< 0.01"` or `">= 0.95"`.
    pub condition: Condition,
    /// Time between two measurements.
    #[serde(default = "default_interval", deserialize_with = "duration_ms")]
    pub interval_ms: u64,
    /// Where it is evaluated; every stage by default.
    #[serde(default = "every_stage")]
    pub at: Vec<Stage>,
    /// Failing measurements in a row before it fails (as the ready and accuracy rules count).
    #[serde(default = "default_consecutive")]
    pub consecutive: u32,
}

fn default_interval() -> u64 {
    30_000
}
fn every_stage() -> Vec<Stage> {
    vec![Stage::Gates, Stage::Canary, Stage::Bake]
}
fn default_consecutive() -> u32 {
    3
}

/// The placeholders a query, or a smoke test's command, may hold.
pub const QUERY_PLACEHOLDERS: [&str; 4] = ["model", "version", "slot", "old_version"];

/// The values a query's or a command's placeholders stand for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placeholders<'a> {
    /// Every `(name, value)` pair, `name` without its braces.
    pub values: Vec<(&'a str, String)>,
}

impl Placeholders<'_> {
    /// `text` with each `{name}` replaced by its value, passed through `escape`; other
    /// braces (a PromQL label matcher) are left as they are.
    pub fn render(&self, text: &str, escape: impl Fn(&str) -> String) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name = after
                .find('}')
                .map(|close| &after[..close])
                .filter(|name| is_placeholder_name(name));
            match name.and_then(|n| self.values.iter().find(|(k, _)| *k == n)) {
                Some((name, value)) => {
                    out.push_str(&escape(value));
                    rest = &after[name.len() + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Escapes a value for a PromQL double-quoted string.
pub fn promql_string(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The first `{name}` in `text` that is not one of `known`: a misspelt placeholder would
/// otherwise reach Prometheus (or a command) as it is.
pub fn unknown_placeholder<'t>(text: &'t str, known: &[&str]) -> Option<&'t str> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let name = &after[..close];
        if is_placeholder_name(name) && !known.contains(&name) {
            return Some(name);
        }
        rest = after;
    }
    None
}

/// A comparison with a number: `< 0.01`, `>= 0.95`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Condition {
    /// The comparison.
    pub op: Op,
    /// The number compared with.
    pub value: f64,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

impl Condition {
    /// Whether `x` satisfies the condition (a NaN never does; callers treat it as no data).
    pub fn holds(&self, x: f64) -> bool {
        match self.op {
            Op::Lt => x < self.value,
            Op::Le => x <= self.value,
            Op::Gt => x > self.value,
            Op::Ge => x >= self.value,
            Op::Eq => x == self.value,
            Op::Ne => x != self.value,
        }
    }
}

impl FromStr for Condition {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let how = || {
            format!(
                "'{text}' is not a condition: write an operator (<, <=, >, >=, == or !=) and a number, like \"< 0.01\""
            )
        };
        // Longest operators first, so "<=" is not read as "<" and "=0.01".
        let (op, rest) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find_map(|(s, op)| t.strip_prefix(s).map(|rest| (op, rest)))
        .ok_or_else(how)?;
        let value: f64 = rest.trim().parse().map_err(|_| how())?;
        if !value.is_finite() {
            return Err(format!("'{text}': the number must be finite"));
        }
        Ok(Condition { op, value })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.value)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One measurement of an analysis: what the query returned and the verdict on it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Measurement {
    /// The analysis's name.
    pub name: String,
    /// Pass, fail, or inconclusive (no data, a NaN, an error from Prometheus or on the way).
    pub verdict: Verdict,
    /// The values the query returned (one per series), when it returned any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f64>,
    /// The numbers behind the verdict, or why there is none, in a sentence.
    pub detail: String,
}

impl Analysis {
    /// Judges the values a query returned: every series must meet the condition; no series,
    /// or a NaN, is inconclusive (never a pass or a failure).
    pub fn judge(&self, values: Vec<f64>) -> Measurement {
        let shown = show(&values);
        let (verdict, detail) = if values.is_empty() {
            (
                Verdict::Inconclusive,
                format!(
                    "the query returned no data (needs {}): nothing to judge",
                    self.condition
                ),
            )
        } else if values.iter().any(|v| v.is_nan()) {
            (
                Verdict::Inconclusive,
                format!(
                    "the query returned NaN ({shown}; needs {}): nothing to judge",
                    self.condition
                ),
            )
        } else if values.iter().all(|v| self.condition.holds(*v)) {
            (Verdict::Pass, format!("{shown}, needs {}", self.condition))
        } else {
            (Verdict::Fail, format!("{shown}, needs {}", self.condition))
        };
        Measurement {
            name: self.name.clone(),
            verdict,
            values,
            detail,
        }
    }

    /// A measurement that could not be taken (Prometheus unreachable, the query refused):
    /// inconclusive, with the reason.
    pub fn unmeasured(&self, reason: &str) -> Measurement {
        Measurement {
            name: self.name.clone(),
            verdict: Verdict::Inconclusive,
            values: Vec::new(),
            detail: reason.to_string(),
        }
    }
}

fn show(values: &[f64]) -> String {
    let mut parts: Vec<String> = values.iter().take(5).map(|v| format!("{v}")).collect();
    if values.len() > 5 {
        parts.push(format!("and {} more", values.len() - 5));
    }
    match values.len() {
        1 => format!("value {}", parts[0]),
        _ => format!("values {}", parts.join(", ")),
    }
}

/// When a webhook is called.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// Before the candidate is deployed; anything but a 2xx stops the rollout.
    PreRollout,
    /// After the gates pass, before any live request moves to the candidate: the switch
    /// (or the first canary step) waits until the hook answers 200.
    PreSwitch,
    /// A canary step began (a notification).
    CanaryStep,
    /// The bake passed and the new version is the release (a notification).
    PostRollout,
    /// Traffic went back to the old version (a notification).
    Rollback,
    /// The rollout was aborted (a notification).
    Abort,
    /// The rollout failed: deploy, readiness or gates (a notification).
    Failure,
}

impl HookEvent {
    /// The name in payloads and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::PreRollout => "pre_rollout",
            HookEvent::PreSwitch => "pre_switch",
            HookEvent::CanaryStep => "canary_step",
            HookEvent::PostRollout => "post_rollout",
            HookEvent::Rollback => "rollback",
            HookEvent::Abort => "abort",
            HookEvent::Failure => "failure",
        }
    }

    /// The notification a phase change is, by the phase it enters.
    pub fn of_phase(to: &str) -> Option<HookEvent> {
        match to {
            "canary" => Some(HookEvent::CanaryStep),
            "promoted" => Some(HookEvent::PostRollout),
            "rolled_back" => Some(HookEvent::Rollback),
            "aborted" => Some(HookEvent::Abort),
            "failed" => Some(HookEvent::Failure),
            _ => None,
        }
    }
}

/// The body a webhook is sent.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HookFormat {
    /// teal's JSON: the event, model, versions, phase, cause and report.
    #[default]
    Json,
    /// `{"text": ...}`, which Slack's incoming webhooks (and Mattermost's, and others) take.
    Slack,
}

/// An HTTP(S) endpoint called at the rollout's points.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Names the hook in outcomes and logs.
    pub name: String,
    /// Where the POST goes: `http://` or `https://`.
    pub url: String,
    /// The points it is called at.
    pub on: Vec<HookEvent>,
    /// The longest one call may take.
    #[serde(default = "default_hook_timeout", deserialize_with = "duration_ms")]
    pub timeout_ms: u64,
    /// Calls after the first when one fails (no answer, or a 5xx or 429), with backoff.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The environment variable holding the HMAC-SHA256 key the body is signed with
    /// (`x-teal-signature-256: sha256=HEX`); none sends it unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The body's shape.
    #[serde(default, skip_serializing_if = "crate::rollout::is_default")]
    pub format: HookFormat,
    /// For `pre_switch`: how long the switch waits for a 200 before the rollout waits for an
    /// operator instead.
    #[serde(default = "default_confirm_timeout", deserialize_with = "duration_ms")]
    pub confirm_timeout_ms: u64,
    /// For `pre_switch`: time between two asks while the answer is not 200.
    #[serde(default = "default_confirm_interval", deserialize_with = "duration_ms")]
    pub confirm_interval_ms: u64,
}

fn default_hook_timeout() -> u64 {
    10_000
}
fn default_retries() -> u32 {
    3
}
fn default_confirm_timeout() -> u64 {
    3_600_000
}
fn default_confirm_interval() -> u64 {
    5_000
}

/// The placeholders a smoke test's command may hold.
pub const SMOKE_PLACEHOLDERS: [&str; 4] = ["candidate_url", "model", "version", "old_version"];

/// A command run against the candidate before the switch: exit status 0 passes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmokeTest {
    /// Names the test in outcomes and the audit trail.
    pub name: String,
    /// The program and its arguments (no shell); `{candidate_url}` is a URL on loopback
    /// where the candidate alone answers the data plane's endpoints for this model.
    pub command: Vec<String>,
    /// The longest it may run; then it is killed and fails.
    #[serde(default = "default_smoke_timeout", deserialize_with = "duration_ms")]
    pub timeout_ms: u64,
    /// Environment variables for it, beside the clean set a model server gets.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
}

fn default_smoke_timeout() -> u64 {
    60_000
}

/// Checks the analyses, webhooks and smoke tests; the error names the field and the reason.
pub fn validate(
    analyses: &[Analysis],
    webhooks: &[Webhook],
    smoke_tests: &[SmokeTest],
) -> Result<(), (String, String)> {
    let err = |f: String, r: String| Err((f, r));
    let mut names = std::collections::BTreeSet::new();
    for (i, a) in analyses.iter().enumerate() {
        let field = |f: &str| format!("analysis[{i}].{f}");
        if a.name.trim().is_empty() {
            return err(field("name"), "must not be empty".into());
        }
        if !names.insert(("analysis", a.name.clone())) {
            return err(field("name"), format!("'{}' is used twice", a.name));
        }
        if a.query.trim().is_empty() {
            return err(field("query"), "must not be empty".into());
        }
        if let Some(name) = unknown_placeholder(&a.query, &QUERY_PLACEHOLDERS) {
            return err(
                field("query"),
                format!(
                    "unknown placeholder {{{name}}}: use {{model}}, {{version}}, {{slot}} or {{old_version}}"
                ),
            );
        }
        if a.interval_ms < 100 {
            return err(field("interval_ms"), "must be at least 100 ms".into());
        }
        if a.at.is_empty() {
            return err(
                field("at"),
                "name where it applies: \"gates\", \"canary\" or \"bake\"".into(),
            );
        }
        if a.consecutive == 0 || a.consecutive > 100 {
            return err(
                field("consecutive"),
                format!("must be 1 to 100, not {}", a.consecutive),
            );
        }
    }
    for (i, w) in webhooks.iter().enumerate() {
        let field = |f: &str| format!("webhook[{i}].{f}");
        if w.name.trim().is_empty() {
            return err(field("name"), "must not be empty".into());
        }
        if !names.insert(("webhook", w.name.clone())) {
            return err(field("name"), format!("'{}' is used twice", w.name));
        }
        if !http_url(&w.url) {
            return err(
                field("url"),
                format!("'{}' is not an http:// or https:// URL with a host", w.url),
            );
        }
        if w.on.is_empty() {
            return err(
                field("on"),
                "name when it is called: pre_rollout, pre_switch, canary_step, post_rollout, rollback, abort or failure".into(),
            );
        }
        if w.timeout_ms < 100 || w.timeout_ms > 600_000 {
            return err(field("timeout_ms"), "must be 100 ms to 10 minutes".into());
        }
        if w.retries > 10 {
            return err(
                field("retries"),
                format!("must be at most 10, not {}", w.retries),
            );
        }
        if w.confirm_interval_ms < 100 {
            return err(
                field("confirm_interval_ms"),
                "must be at least 100 ms".into(),
            );
        }
        if let Some(var) = &w.secret_env
            && (var.is_empty() || var.contains('='))
        {
            return err(
                field("secret_env"),
                format!("'{var}' is not an environment variable's name"),
            );
        }
    }
    for (i, s) in smoke_tests.iter().enumerate() {
        let field = |f: &str| format!("smoke_test[{i}].{f}");
        if s.name.trim().is_empty() {
            return err(field("name"), "must not be empty".into());
        }
        if !names.insert(("smoke_test", s.name.clone())) {
            return err(field("name"), format!("'{}' is used twice", s.name));
        }
        if s.command.first().is_none_or(|p| p.trim().is_empty()) {
            return err(
                field("command"),
                "name a program and its arguments, like [\"./smoke.sh\", \"{candidate_url}\"]"
                    .into(),
            );
        }
        if let Some(name) = s
            .command
            .iter()
            .find_map(|a| unknown_placeholder(a, &SMOKE_PLACEHOLDERS))
        {
            return err(
                field("command"),
                format!(
                    "unknown placeholder {{{name}}}: use {{candidate_url}}, {{model}}, {{version}} or {{old_version}}"
                ),
            );
        }
        if s.timeout_ms < 100 {
            return err(field("timeout_ms"), "must be at least 100 ms".into());
        }
    }
    Ok(())
}

/// Whether `url` is `http://` or `https://` followed by a host.
pub fn http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.starts_with(':') && !r.chars().any(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(condition: &str) -> Analysis {
        Analysis {
            name: "errors".into(),
            query: "x".into(),
            condition: condition.parse().unwrap(),
            interval_ms: 1_000,
            at: every_stage(),
            consecutive: 3,
        }
    }

    #[test]
    fn conditions_parse_print_back_and_judge() {
        for (text, x, holds) in [
            ("< 0.01", 0.005, true),
            ("<0.01", 0.01, false),
            ("<= 0.01", 0.01, true),
            (">= 0.95", 0.95, true),
            ("> 0.95", 0.95, false),
            ("== 1", 1.0, true),
            ("!= 1", 1.0, false),
            (" >= -2e3 ", -2000.0, true),
        ] {
            let c: Condition = text.parse().unwrap();
            assert_eq!(c.holds(x), holds, "{text} on {x}");
            assert_eq!(c.to_string().parse::<Condition>().unwrap(), c);
        }
        for bad in ["", "0.01", "< ", "< abc", "=< 1", "~ 1", "< inf", "< NaN"] {
            assert!(bad.parse::<Condition>().is_err(), "{bad}");
        }
        assert!(!"< 1".parse::<Condition>().unwrap().holds(f64::NAN));
    }

    #[test]
    fn no_data_and_nan_are_inconclusive_never_a_verdict() {
        let a = analysis("< 0.01");
        assert_eq!(a.judge(vec![]).verdict, Verdict::Inconclusive);
        assert_eq!(a.judge(vec![f64::NAN]).verdict, Verdict::Inconclusive);
        assert_eq!(
            a.judge(vec![0.001, f64::NAN]).verdict,
            Verdict::Inconclusive
        );
        assert_eq!(a.judge(vec![0.001]).verdict, Verdict::Pass);
        assert_eq!(a.judge(vec![0.001, 0.5]).verdict, Verdict::Fail);
        assert_eq!(a.judge(vec![0.5]).detail, "value 0.5, needs < 0.01");
        assert!(a.unmeasured("no answer").verdict == Verdict::Inconclusive);
    }

    #[test]
    fn placeholders_are_replaced_escaped_and_label_matchers_left_alone() {
        let p = Placeholders {
            values: vec![("model", "digits".into()), ("version", "v\"2".into())],
        };
        let q = "sum(rate(teal_requests_total{model=\"{model}\",version=\"{version}\",x=~\"{a}\"}[1m]))";
        assert_eq!(
            p.render(q, promql_string),
            "sum(rate(teal_requests_total{model=\"digits\",version=\"v\\\"2\",x=~\"{a}\"}[1m]))"
        );
        assert_eq!(unknown_placeholder(q, &QUERY_PLACEHOLDERS), Some("a"));
        assert_eq!(
            unknown_placeholder("up{job=\"x\"} + {model}", &QUERY_PLACEHOLDERS),
            None
        );
        assert_eq!(p.render("{", promql_string), "{");
        assert_eq!(p.render("{model", promql_string), "{model");
    }

    #[test]
    fn bad_entries_are_refused_with_the_field_named() {
        let a = analysis("< 1");
        let hook = |url: &str| Webhook {
            name: "h".into(),
            url: url.into(),
            on: vec![HookEvent::Rollback],
            timeout_ms: 1_000,
            retries: 3,
            secret_env: None,
            format: HookFormat::Json,
            confirm_timeout_ms: 1_000,
            confirm_interval_ms: 1_000,
        };
        assert!(
            validate(
                std::slice::from_ref(&a),
                &[hook("http://127.0.0.1:9/x")],
                &[]
            )
            .is_ok()
        );
        for url in [
            "ftp://x/y",
            "http://",
            "file:///etc/passwd",
            "localhost:80",
            "http://:80/",
        ] {
            let e = validate(&[], &[hook(url)], &[]).unwrap_err();
            assert_eq!(e.0, "webhook[0].url", "{url}");
        }
        let mut typo = a.clone();
        typo.query = "rate(x{model=\"{modle}\"}[1m])".into();
        let e = validate(&[typo], &[], &[]).unwrap_err();
        assert_eq!(e.0, "analysis[0].query");
        assert!(e.1.contains("{modle}"), "{}", e.1);
        let e = validate(&[a.clone(), a], &[], &[]).unwrap_err();
        assert_eq!(e.0, "analysis[1].name");
        let smoke = SmokeTest {
            name: "s".into(),
            command: vec![],
            timeout_ms: 1_000,
            env: Default::default(),
        };
        assert_eq!(
            validate(&[], &[], &[smoke]).unwrap_err().0,
            "smoke_test[0].command"
        );
        let parsed: Result<Analysis, _> =
            toml::from_str("name = \"a\"\nquery = \"x\"\ncondition = \"about 3\"\n");
        assert!(parsed.unwrap_err().to_string().contains("not a condition"));
    }
}
