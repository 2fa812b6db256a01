//! Reaching the admin API: its address and token (flags, environment, or the files
//! `teal serve` writes in its state folder), and one call to it.

use super::*;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The admin API's URL. Default: the address teal wrote in the state folder, else http://127.0.0.1:8090.
    #[arg(long, env = "TEAL_ADMIN_URL", value_name = "URL")]
    pub admin_url: Option<String>,
    /// teal's state folder, where it keeps the admin token and address.
    #[arg(
        long,
        env = "TEAL_STATE_DIR",
        default_value = ".teal",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl AdminArgs {
    /// A client for the admin API, with the token from `TEAL_ADMIN_TOKEN` or the state folder.
    pub(crate) fn client(&self) -> anyhow::Result<HttpClient> {
        let url = match &self.admin_url {
            Some(url) => url.clone(),
            None => std::fs::read_to_string(self.state_dir.join(token::ADMIN_URL_FILE))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| format!("http://{}", teal_core::config::DEFAULT_ADMIN)),
        };
        let token = match std::env::var("TEAL_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            Some(token) => token.trim().to_string(),
            None => read_token(&self.state_dir)?,
        };
        let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Ok(HttpClient::new(&url)
            .with_token(Some(token))
            .with_header("x-teal-actor", &format!("{user}@{host}")))
    }
}

pub(crate) fn read_token(state_dir: &Path) -> anyhow::Result<String> {
    let path = token::token_path(state_dir);
    std::fs::read_to_string(&path).map(|t| t.trim().to_string()).with_context(|| {
        format!(
            "no admin token: set TEAL_ADMIN_TOKEN, or point --state-dir at the folder where teal serve keeps its state ({} not readable)",
            path.display()
        )
    })
}

pub(crate) async fn call(
    client: &HttpClient,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let answer = match body {
        Some(body) => client.post_json(path, &body).await,
        None => client.get(path).await,
    }
    .map_err(|e| anyhow::anyhow!("{e}: is `teal serve` running? (admin URL from --admin-url, TEAL_ADMIN_URL or the state folder)"))?;
    if !(200..300).contains(&answer.status) {
        bail!("{} (HTTP {})", answer.error_message(), answer.status);
    }
    Ok(answer.json())
}
