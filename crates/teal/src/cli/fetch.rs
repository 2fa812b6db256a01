//! `teal fetch`: one model file from a source (a registry version, an S3 object, a URL),
//! checked and written to a path, as a slot's `source` fetches it. On Kubernetes it is the
//! init container that brings a colour's file into its pods.

use std::path::PathBuf;

use crate::backends::fetch::Fetcher;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  teal fetch models:/fraud/7 --output /mnt/models/model.onnx
  teal fetch https://models.example/fraud/v8.onnx --sha256 9f86d0... --output model.onnx
  teal fetch s3://models/fraud/v8/model.onnx --output model.onnx --json

An MLflow source needs the tracking server (--mlflow-uri or MLFLOW_TRACKING_URI); an S3 one
reads its credentials, region and endpoint from the usual AWS_* variables. A broken-off
download is retried with backoff, and resumed where the source still has the same file.")]
pub struct FetchArgs {
    /// The source: models:/NAME/VERSION or models:/NAME@ALIAS, s3://BUCKET/KEY, or an
    /// http(s):// URL.
    pub source: String,
    /// Where to write the file (its folder must exist).
    #[arg(long, short, value_name = "PATH")]
    pub output: PathBuf,
    /// The SHA-256 (hex) the file must have; without it, the digest is printed.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// The MLflow tracking server (default: MLFLOW_TRACKING_URI).
    #[arg(long, value_name = "URI")]
    pub mlflow_uri: Option<String>,
    /// The largest file to accept, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 2 << 30)]
    pub max_bytes: u64,
    /// Print the file's provenance as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    if let Some(pin) = &args.sha256
        && !(pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        anyhow::bail!("--sha256 must be 64 hexadecimal digits, not '{pin}'");
    }
    let output = std::path::absolute(&args.output)?;
    let folder = output
        .parent()
        .filter(|p| p.is_dir())
        .ok_or_else(|| anyhow::anyhow!("{}: its folder does not exist", output.display()))?;
    // The download is kept beside the output, so that it is renamed into place, never
    // copied, and a file is at the output only once it is whole and checked.
    let scratch = folder.join(format!(".teal-fetch-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| anyhow::anyhow!("cannot write in {}: {e}", folder.display()))?;
    let fetcher = Fetcher::new(
        &scratch,
        args.mlflow_uri.as_deref(),
        args.max_bytes,
        2,
        u64::MAX,
    );
    let fetched = fetcher.fetch(&args.source, args.sha256.as_deref()).await;
    let outcome = match fetched {
        Ok((path, provenance)) => std::fs::rename(&path, &output)
            .map(|()| provenance)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display())),
        Err(e) => Err(anyhow::anyhow!("cannot fetch {e}")),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let provenance = outcome?;
    if args.json {
        let mut shown = serde_json::to_value(&provenance)?;
        shown["path"] = serde_json::json!(output);
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        let run = provenance
            .run_id
            .as_deref()
            .map(|r| format!(", run {r}"))
            .unwrap_or_default();
        println!(
            "fetched {}{run}: {} bytes, sha256 {} -> {}",
            provenance.resolved,
            provenance.bytes,
            provenance.sha256,
            output.display()
        );
    }
    Ok(())
}
