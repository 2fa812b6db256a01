//! `teal status`, once or refreshed with `--watch`.

use super::*;

/// Redraws the status every second until interrupted.
pub(crate) async fn watch_status(model: Option<String>, admin: AdminArgs) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal() && !admin.json;
    loop {
        if terminal {
            // Clear the screen and go home.
            print!("\x1b[2J\x1b[H");
            println!(
                "teal status (every 1 s, Ctrl-C to stop)  {}\n",
                crate::state::store::format_time(crate::state::store::now_ms())
            );
        }
        status(
            model.clone(),
            AdminArgs {
                admin_url: admin.admin_url.clone(),
                state_dir: admin.state_dir.clone(),
                json: admin.json,
            },
        )
        .await?;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub(crate) async fn status(model: Option<String>, admin: AdminArgs) -> anyhow::Result<()> {
    let client = admin.client()?;
    let mut state = serde_json::Value::Null;
    let models: Vec<ModelStatus> = match &model {
        Some(name) => vec![serde_json::from_value(
            call(&client, &format!("/api/v1/models/{name}"), None).await?,
        )?],
        None => {
            let all = call(&client, "/api/v1/status", None).await?;
            state = all["state"].clone();
            serde_json::from_value(all["models"].clone())?
        }
    };
    if admin.json {
        let value = match model {
            Some(_) => serde_json::to_value(&models[0])?,
            None => serde_json::json!({ "models": models, "state": state }),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if state["writable"] == false {
        println!(
            "warning: the state file cannot be written since {} ({}); teal keeps serving, but requests are not recorded and rollouts cannot start",
            state["since"].as_str().unwrap_or("?"),
            state["error"].as_str().unwrap_or("?"),
        );
    }
    for m in &models {
        print!("{}", render_status(m));
    }
    Ok(())
}
