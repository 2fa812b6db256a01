//! `teal history` and `teal audit`: the audit log and which version answered a request.

use super::*;

pub(crate) async fn audit(
    target: String,
    at: Option<String>,
    request: Option<String>,
    admin: AdminArgs,
) -> anyhow::Result<()> {
    let client = admin.client()?;
    let path = match (&at, &request) {
        (None, None) if target == "verify" => "/api/v1/audit/verify".to_string(),
        (None, None) => bail!(
            "say what to look up: teal audit {target} --at TIME, --request ID, or teal audit verify"
        ),
        (Some(at), _) => format!("/api/v1/models/{target}/audit?at={at}"),
        (None, Some(id)) => format!("/api/v1/models/{target}/audit?request={id}"),
    };
    let answer = call(&client, &path, None).await?;
    if admin.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if target == "verify" && at.is_none() && request.is_none() {
        // The server says what it found in plain words; an older one only gave the counts.
        match (answer["intact"] == true, answer["finding"].as_str()) {
            (true, Some(finding)) => println!("audit log intact: {finding}"),
            (false, Some(finding)) => println!("audit log TAMPERED: {finding}"),
            (true, None) => println!(
                "audit log intact: {} events, every hash follows from its event and the one before",
                answer["events"]
            ),
            (false, None) => println!(
                "audit log TAMPERED: event #{} does not match its hash chain ({} events read)",
                answer["first_broken"], answer["events"]
            ),
        }
    } else if let Some(requests) = answer["requests"].as_array() {
        for r in requests {
            println!(
                "request {} at {}: {} {} ({}), status {}, {} us",
                r["request_id"].as_str().unwrap_or("?"),
                crate::state::store::format_time(r["at_ms"].as_i64().unwrap_or(0)),
                r["model"].as_str().unwrap_or("?"),
                r["version"].as_str().unwrap_or("-"),
                r["slot"].as_str().unwrap_or("-"),
                r["status"],
                r["latency_us"]
            );
            if let Some(p) = r["provenance"].as_object() {
                println!(
                    "  its model: {} ({}){}{}",
                    p["source"].as_str().unwrap_or("?"),
                    p["resolved"].as_str().unwrap_or("?"),
                    p["sha256"]
                        .as_str()
                        .map(|d| format!(", sha256 {d}"))
                        .unwrap_or_default(),
                    p.get("run_id")
                        .and_then(|r| r.as_str())
                        .map(|r| format!(", MLflow run {r}"))
                        .unwrap_or_default()
                );
            }
        }
    } else {
        println!(
            "{target} at {}: {} ({}) was live, since {} ({})",
            answer["at"].as_str().unwrap_or("?"),
            answer["live_version"].as_str().unwrap_or("?"),
            answer["live_slot"].as_str().unwrap_or("?"),
            answer["since"]["at"].as_str().unwrap_or("?"),
            answer["since"]["kind"].as_str().unwrap_or("?")
        );
    }
    if target == "verify" && answer["intact"] == false {
        bail!("the audit log does not verify");
    }
    Ok(())
}
