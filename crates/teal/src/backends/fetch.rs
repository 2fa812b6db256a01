//! Fetching a model file from its source: a version in an MLflow model registry (its ONNX
//! flavour, through the tracking server's REST API and artifact proxy) or a URL. Each download
//! is streamed to a temporary file, hashed as it arrives, checked against its size limit and
//! its pin, and kept in the state folder under its digest; a failed attempt is retried with
//! backoff, resuming from the bytes it has when the source still has the same file. What was
//! fetched is recorded as the version's provenance.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use teal_core::source::{RegistryRef, Source};
use tokio::io::AsyncWriteExt;

/// Where a version's file came from, as the status and the audit trail record it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Provenance {
    /// The source as configured (`models:/fraud@champion`, a URL).
    pub source: String,
    /// What it resolved to: `models:/fraud/7` for a registry alias, else the source.
    pub resolved: String,
    /// The registry's version number, for a registry source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_version: Option<String>,
    /// The MLflow run that logged the model, when the registry knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The file's SHA-256, hex; empty for a registry version a command serves (teal fetched
    /// no file).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    #[serde(default)]
    pub bytes: u64,
}

/// Fetches model files for the slots that name a source.
pub struct Fetcher {
    client: reqwest::Client,
    /// `<state_dir>/artifacts`: files by digest.
    cache: PathBuf,
    mlflow: Option<String>,
    max_bytes: u64,
    /// The tracking server's credentials, as MLflow's own clients take them from the
    /// environment (`MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and
    /// `MLFLOW_TRACKING_PASSWORD`): sent to the tracking server's own address only.
    mlflow_auth: Option<MlflowAuth>,
    /// Files kept in the cache (`server.artifact_cache_files`), and their bytes
    /// (`server.artifact_cache_bytes`).
    keep: usize,
    keep_bytes: u64,
}

/// Attempts at one download, and the wait before the first retry (doubled each time).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Where bytes are: a URL, or an object in an S3-compatible store.
#[derive(Clone, Debug)]
enum Location {
    Http(String),
    S3 { bucket: String, key: String },
}

impl Location {
    /// The file `name` in this folder.
    fn join(&self, name: &str) -> Location {
        match self {
            Location::Http(url) => Location::Http(format!("{}/{name}", url.trim_end_matches('/'))),
            Location::S3 { bucket, key } => Location::S3 {
                bucket: bucket.clone(),
                key: format!("{}/{name}", key.trim_end_matches('/')),
            },
        }
    }
}

/// Bytes as a download delivers them.
type Body = std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, String>> + Send>>;

/// A source's answer to one attempt: the bytes from offset `from` of a file of `total`
/// bytes (when told), and what names that file at the source for a later resume.
struct Opened {
    body: Body,
    from: u64,
    total: Option<u64>,
    validator: Option<String>,
}

impl Opened {
    /// No bytes, and nothing to resume from: the attempt fails and the next starts again.
    fn nothing() -> Opened {
        Opened {
            body: Box::pin(futures::stream::once(async {
                Err("the source could not send the rest of the same file".to_string())
            })),
            from: 0,
            total: None,
            validator: None,
        }
    }
}

/// A download under way: its temporary file, the bytes it holds and their running hash, and
/// the validator (ETag or Last-Modified) of the file they came from.
struct Partial {
    path: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    bytes: u64,
    validator: Option<String>,
}

impl Partial {
    /// Empties the download, to fetch the file from its start.
    async fn restart(&mut self) -> Result<(), (String, bool)> {
        use tokio::io::AsyncSeekExt;
        let failed =
            |e: std::io::Error| (format!("cannot write {}: {e}", self.path.display()), false);
        self.file.set_len(0).await.map_err(failed)?;
        self.file.rewind().await.map_err(failed)?;
        self.hasher = Sha256::new();
        self.bytes = 0;
        Ok(())
    }
}

/// `bytes START-END/TOTAL` (or `/*`): the start, and the total when it is told.
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// A version in the registry, as its REST API describes it.
#[derive(Debug, Deserialize)]
struct ModelVersion {
    version: String,
    #[serde(default)]
    run_id: Option<String>,
}

impl Fetcher {
    /// `mlflow` is the configured tracking server; unset, `MLFLOW_TRACKING_URI` is read.
    pub fn new(
        state_dir: &Path,
        mlflow: Option<&str>,
        max_bytes: u64,
        keep: usize,
        keep_bytes: u64,
    ) -> Fetcher {
        // reqwest is built without a crypto provider of its own: it uses rustls's process
        // default, ring, which the Kubernetes client uses too. Installing it twice is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30))
            .user_agent(concat!("teal/", env!("CARGO_PKG_VERSION")))
            // A redirect may not take an https download to plain http, and at most 5 hops.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let downgrade = attempt.url().scheme() == "http"
                    && attempt.previous().iter().any(|u| u.scheme() == "https");
                if downgrade {
                    attempt.error("a redirect from https to plain http")
                } else if attempt.previous().len() > 5 {
                    attempt.error("more than 5 redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .unwrap_or_default();
        let mlflow = mlflow
            .map(str::to_string)
            .or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok())
            .filter(|uri| !uri.is_empty())
            .map(|uri| uri.trim_end_matches('/').to_string());
        Fetcher {
            client,
            mlflow_auth: mlflow_auth(|name| std::env::var(name).ok()),
            keep,
            keep_bytes,
            cache: state_dir.join("artifacts"),
            mlflow,
            max_bytes,
        }
    }

    /// A fetcher that only reads the registry (`resolve`), as the Kubernetes operator does
    /// for a resource's watched alias: it keeps no files.
    pub fn resolver(mlflow: &str) -> Fetcher {
        Fetcher::new(Path::new(""), Some(mlflow), 0, 0, 0)
    }

    /// Fetches `source` (checked against `pin` when given) into the cache and returns its
    /// path and provenance. Nothing else changes when it fails.
    pub async fn fetch(
        &self,
        uri: &str,
        pin: Option<&str>,
    ) -> Result<(PathBuf, Provenance), String> {
        let parsed = Source::parse(uri)?;
        // What is logged, answered and recorded: the source without a password or a query
        // (a signed URL's signature is a credential).
        let shown = redacted(uri);
        let source = shown.as_str();
        let pin = pin.map(str::to_ascii_lowercase);
        // A registry version by number never changes: a file kept for it is used without
        // asking the registry, so a restart does not need the registry to be up.
        if let Source::Registry {
            name,
            at: RegistryRef::Version(number),
        } = &parsed
        {
            let resolved = format!("models:/{name}/{number}");
            if let Some((kept, sha256, bytes, run_id)) = self.kept_for(&resolved).await
                && pin.as_ref().is_none_or(|pin| *pin == sha256)
            {
                return Ok((
                    kept,
                    Provenance {
                        source: source.to_string(),
                        resolved,
                        registry_version: Some(number.to_string()),
                        run_id,
                        sha256,
                        bytes,
                    },
                ));
            }
        }
        // What the source names now: a registry alias is read each time (it moves); a
        // registry version and a pinned URL never change, so a file kept for them is used
        // again without fetching.
        let (resolved, version) = match &parsed {
            Source::Url(_) | Source::S3 { .. } => (source.to_string(), None),
            Source::Registry { name, at } => {
                let version = self.registry_version(name, at).await?;
                (format!("models:/{name}/{}", version.version), Some(version))
            }
        };
        let fixed = pin.is_some() || version.is_some();
        let provenance = |sha256: String, bytes: u64| Provenance {
            source: source.to_string(),
            resolved: resolved.clone(),
            registry_version: version.as_ref().map(|v| v.version.clone()),
            run_id: version
                .as_ref()
                .and_then(|v| v.run_id.clone())
                .filter(|r| !r.is_empty()),
            sha256,
            bytes,
        };
        if fixed
            && let Some((kept, sha256, bytes, _)) = self.kept_for(&resolved).await
            && pin.as_ref().is_none_or(|pin| *pin == sha256)
        {
            return Ok((kept, provenance(sha256, bytes)));
        }
        let location = match (&parsed, &version) {
            (Source::Registry { name, .. }, Some(version)) => {
                self.onnx_artifact(name, &version.version).await?
            }
            (Source::S3 { bucket, key }, _) => Location::S3 {
                bucket: bucket.clone(),
                key: key.clone(),
            },
            _ => Location::Http(uri.to_string()),
        };
        let (path, sha256, bytes) = self.download(&location, source, pin.as_deref()).await?;
        if fixed {
            let run_id = version.as_ref().and_then(|v| v.run_id.as_deref());
            self.remember(&resolved, &sha256, run_id).await;
        }
        Ok((path, provenance(sha256, bytes)))
    }

    /// Where the note of which file a fixed source gave is kept.
    fn note(&self, resolved: &str) -> PathBuf {
        let digest = Sha256::digest(resolved.as_bytes());
        let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        self.cache.join(format!("source-{name}"))
    }

    /// The file kept for a fixed source: its path, digest, size and the registry's run id,
    /// if there is one.
    async fn kept_for(&self, resolved: &str) -> Option<(PathBuf, String, u64, Option<String>)> {
        let note = tokio::fs::read_to_string(self.note(resolved)).await.ok()?;
        let mut lines = note.lines();
        let (sha256, source) = (lines.next()?, lines.next()?);
        if source != resolved
            || sha256.len() != 64
            || !sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        let run_id = lines.next().filter(|r| !r.is_empty()).map(str::to_string);
        let kept = self.kept(sha256);
        let bytes = tokio::fs::metadata(&kept).await.ok()?.len();
        // Used again: the newest for the cache's pruning.
        if let Ok(file) = std::fs::File::open(&kept) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        Some((kept, sha256.to_string(), bytes, run_id))
    }

    /// Deletes files, the least recently used first and none of `in_use` (the loaded
    /// versions' digests), until at most `server.artifact_cache_files` are left holding at
    /// most `server.artifact_cache_bytes`, and the notes that named them; returns how many
    /// files went.
    pub async fn prune(&self, in_use: Vec<String>) -> usize {
        let (cache, keep, keep_bytes) = (self.cache.clone(), self.keep, self.keep_bytes);
        let removed = tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&cache) else {
                return 0;
            };
            let mut files: Vec<(std::time::SystemTime, String, PathBuf, u64)> = entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let digest = name
                        .strip_prefix("sha256-")?
                        .strip_suffix(".onnx")?
                        .to_string();
                    let metadata = e.metadata().ok()?;
                    let at = metadata.modified().ok()?;
                    Some((at, digest, e.path(), metadata.len()))
                })
                .collect();
            // Oldest first, until no more than `keep` are left holding no more than
            // `keep_bytes`; a file in use stays.
            files.sort_by_key(|f| f.0);
            let mut left = files.len();
            let mut bytes: u64 = files.iter().map(|f| f.3).sum();
            let mut removed = 0;
            let mut gone = std::collections::HashSet::new();
            for (_, digest, path, size) in files {
                if left <= keep && bytes <= keep_bytes {
                    break;
                }
                if !in_use.contains(&digest) && std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                    left -= 1;
                    bytes -= size;
                    gone.insert(digest);
                }
            }
            if !gone.is_empty()
                && let Ok(entries) = std::fs::read_dir(&cache)
            {
                for e in entries.flatten() {
                    let is_note = e.file_name().to_string_lossy().starts_with("source-");
                    let names_gone = std::fs::read_to_string(e.path())
                        .ok()
                        .and_then(|t| t.lines().next().map(|d| gone.contains(d)))
                        .unwrap_or(false);
                    if is_note && names_gone {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
            removed
        })
        .await
        .unwrap_or(0);
        if removed > 0 {
            tracing::info!(
                removed,
                files = self.keep,
                bytes = self.keep_bytes,
                "artifact cache: removed the least recently used model files no loaded version uses"
            );
        }
        removed
    }

    async fn remember(&self, resolved: &str, sha256: &str, run_id: Option<&str>) {
        let note = self.note(resolved);
        let partial = note.with_extension("partial");
        let run_id = run_id.unwrap_or_default();
        let written = tokio::fs::write(&partial, format!("{sha256}\n{resolved}\n{run_id}\n")).await;
        if written.is_ok() {
            let _ = tokio::fs::rename(&partial, &note).await;
        }
    }

    /// The version a registry source names now (for an alias, the one it points at).
    /// The tracking server models:/ sources are read from, if one is set.
    pub fn tracking_uri(&self) -> Option<&str> {
        self.mlflow.as_deref()
    }

    /// A registry version a command serves (a process slot's `source`): the alias resolved
    /// to its number, with the run that logged it. No file is fetched.
    pub async fn registry_provenance(&self, source: &str) -> Result<Provenance, String> {
        let Source::Registry { name, at } = Source::parse(source)? else {
            return Err(format!("{source} is not a registry version"));
        };
        let found = self.registry_version(&name, &at).await?;
        Ok(Provenance {
            source: source.to_string(),
            resolved: format!("models:/{name}/{}", found.version),
            registry_version: Some(found.version),
            run_id: found.run_id,
            sha256: String::new(),
            bytes: 0,
        })
    }

    pub async fn resolve(&self, source: &str) -> Result<String, String> {
        match Source::parse(source)? {
            Source::Registry { name, at } => Ok(self.registry_version(&name, &at).await?.version),
            Source::Url(_) | Source::S3 { .. } => {
                Err(format!("{source} is not a registry version"))
            }
        }
    }

    fn kept(&self, sha256: &str) -> PathBuf {
        self.cache.join(format!("sha256-{sha256}.onnx"))
    }

    /// `request` with the tracking server's credentials when `url` is on the tracking
    /// server (its REST API, its artifact proxy), and as it is anywhere else.
    fn with_auth(&self, request: reqwest::RequestBuilder, url: &str) -> reqwest::RequestBuilder {
        let origin = |url: &str| reqwest::Url::parse(url).ok().map(|u| u.origin());
        let on_tracking = self
            .mlflow
            .as_deref()
            .and_then(origin)
            .is_some_and(|base| origin(url) == Some(base));
        // reqwest marks both headers sensitive: they are never logged.
        match &self.mlflow_auth {
            Some(MlflowAuth::Bearer(token)) if on_tracking => request.bearer_auth(token),
            Some(MlflowAuth::Basic(user, password)) if on_tracking => {
                request.basic_auth(user, password.as_ref())
            }
            _ => request,
        }
    }

    fn tracking(&self) -> Result<&str, String> {
        self.mlflow.as_deref().ok_or_else(|| {
            "a models:/ source needs the MLflow tracking server: set server.mlflow_uri in the config or MLFLOW_TRACKING_URI".to_string()
        })
    }

    /// A GET on the tracking server's REST API, its JSON answer, or the server's own error.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value, String> {
        let base = self.tracking()?;
        let url = reqwest::Url::parse_with_params(&format!("{base}{path}"), query)
            .map_err(|e| format!("the MLflow tracking URI {base} is not a URL: {e}"))?;
        let answer = self
            .with_auth(self.client.get(url.clone()), url.as_str())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the MLflow tracking server at {} cannot be reached: {}",
                    redacted(base),
                    error_chain(&e.without_url())
                )
            })?;
        let status = answer.status();
        let body: serde_json::Value = answer
            .bytes()
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let message = body["message"].as_str().unwrap_or("no message");
            return Err(format!(
                "the MLflow tracking server answered {status}: {message}"
            ));
        }
        Ok(body)
    }

    async fn registry_version(&self, name: &str, at: &RegistryRef) -> Result<ModelVersion, String> {
        let body = match at {
            RegistryRef::Alias(alias) => {
                self.api(
                    "/api/2.0/mlflow/registered-models/alias",
                    &[("name", name), ("alias", alias)],
                )
                .await
            }
            RegistryRef::Version(version) => {
                self.api(
                    "/api/2.0/mlflow/model-versions/get",
                    &[("name", name), ("version", &version.to_string())],
                )
                .await
            }
        }
        .map_err(|e| format!("models:/{name}{}: {e}", at_text(at)))?;
        serde_json::from_value(body["model_version"].clone()).map_err(|_| {
            format!(
                "models:/{name}{}: the tracking server's answer has no model version",
                at_text(at)
            )
        })
    }

    /// The URL of a registry version's ONNX file: its artifacts' location, then the ONNX
    /// flavour's file named in its `MLmodel`.
    async fn onnx_artifact(&self, name: &str, version: &str) -> Result<Location, String> {
        let what = format!("models:/{name}/{version}");
        let body = self
            .api(
                "/api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", name), ("version", version)],
            )
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let location = body["artifact_uri"]
            .as_str()
            .ok_or_else(|| format!("{what}: the tracking server gave no artifact location"))?;
        let base = self
            .artifact_url(location)
            .map_err(|e| format!("{what}: {e}"))?;
        let mlmodel = self
            .read_text(&base.join("MLmodel"))
            .await
            .map_err(|e| format!("{what}: its MLmodel file cannot be read: {e}"))?;
        let file = onnx_flavour_file(&mlmodel).map_err(|e| format!("{what}: {e}"))?;
        Ok(base.join(&file))
    }

    /// Where the files of an artifact location are: the tracking server's artifact proxy, a
    /// URL, or an S3 store.
    fn artifact_url(&self, location: &str) -> Result<Location, String> {
        let base = self.tracking()?;
        if let Some(rest) = location.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/path` or `mlflow-artifacts://host:port/path`: served by the
            // tracking server's artifact proxy.
            let path = match rest.strip_prefix("//") {
                Some(authority_and_path) => authority_and_path
                    .split_once('/')
                    .map_or("", |(_, path)| path),
                None => rest.trim_start_matches('/'),
            };
            return Ok(Location::Http(format!(
                "{base}/api/2.0/mlflow-artifacts/artifacts/{path}"
            )));
        }
        if location.starts_with("http://") || location.starts_with("https://") {
            return Ok(Location::Http(location.trim_end_matches('/').to_string()));
        }
        if let Some(rest) = location.strip_prefix("s3://")
            && let Some((bucket, key)) = rest.split_once('/')
        {
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key: key.trim_end_matches('/').to_string(),
            });
        }
        Err(format!(
            "its artifacts are at {location}, which teal cannot read: start the tracking server with its artifact proxy (mlflow server --serve-artifacts, the default) so that they are served over HTTP, or keep them in an S3 store"
        ))
    }

    /// Downloads `url` into the cache, retrying a failed attempt with backoff; returns the
    /// kept file, its SHA-256 and its size. A download that broke off resumes from the bytes
    /// it has when the source can send the rest of the same file (an HTTP server that honours
    /// `Range` with `If-Range` on its ETag or Last-Modified, an S3 store with `If-Match` on
    /// its ETag); otherwise it starts again. An attempt that brought new bytes does not count
    /// against the attempts: only attempts in a row that bring nothing do.
    async fn download(
        &self,
        location: &Location,
        source: &str,
        pin: Option<&str>,
    ) -> Result<(PathBuf, String, u64), String> {
        tokio::fs::create_dir_all(&self.cache)
            .await
            .map_err(|e| format!("cannot make {}: {e}", self.cache.display()))?;
        let path = self.cache.join(format!(
            ".download-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| format!("{source}: cannot write {}: {e}", path.display()))?;
        let mut partial = Partial {
            path,
            file,
            hasher: Sha256::new(),
            bytes: 0,
            validator: None,
        };
        // Each of the two removes the temporary file when it fails.
        self.download_into(&mut partial, location, source).await?;
        self.keep_download(partial, source, pin).await
    }

    /// Brings the whole file into `partial`, attempt after attempt.
    async fn download_into(
        &self,
        partial: &mut Partial,
        location: &Location,
        source: &str,
    ) -> Result<(), String> {
        let mut wait = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let before = partial.bytes;
            match self.attempt(location, source, partial).await {
                Ok(()) => return Ok(()),
                Err((error, retry)) => {
                    if partial.bytes > before {
                        // Progress: the next try resumes, and the count starts again.
                        attempt = 1;
                        wait = FIRST_BACKOFF;
                    }
                    if !(retry && attempt < ATTEMPTS) {
                        let _ = tokio::fs::remove_file(&partial.path).await;
                        return Err(format!("{source}: {error}"));
                    }
                    let resume = match (&partial.validator, partial.bytes) {
                        (Some(_), bytes) if bytes > 0 => {
                            format!("resuming at {} of its bytes", partial.bytes)
                        }
                        _ => "starting again".to_string(),
                    };
                    tracing::warn!(source, attempt, error = %error, "download failed; {resume} in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Checks a whole download against its pin and keeps it under its digest.
    async fn keep_download(
        &self,
        partial: Partial,
        source: &str,
        pin: Option<&str>,
    ) -> Result<(PathBuf, String, u64), String> {
        let Partial {
            path,
            file,
            hasher,
            bytes,
            ..
        } = partial;
        let written = file.sync_all().await;
        drop(file);
        let discard = async |error: String| {
            let _ = tokio::fs::remove_file(&path).await;
            Err(format!("{source}: {error}"))
        };
        if let Err(e) = written {
            return discard(format!("cannot write {}: {e}", path.display())).await;
        }
        let sha256: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // A file that is not the pinned one is never kept: the name it would take may be
        // another source's.
        if let Some(pin) = pin
            && pin != sha256
        {
            return discard(format!(
                "the file's SHA-256 is {sha256}, not the pinned {pin}: refused"
            ))
            .await;
        }
        let kept = self.kept(&sha256);
        if let Err(e) = tokio::fs::rename(&path, &kept).await {
            return discard(format!("cannot keep {}: {e}", kept.display())).await;
        }
        tracing::info!(source, sha256 = %sha256, bytes, "downloaded");
        Ok((kept, sha256, bytes))
    }

    /// One attempt: the rest of the file after what `partial` holds, or the whole file again
    /// when the source cannot send the rest of the same one. The error says whether another
    /// attempt could succeed.
    async fn attempt(
        &self,
        location: &Location,
        source: &str,
        partial: &mut Partial,
    ) -> Result<(), (String, bool)> {
        let resume = match &partial.validator {
            Some(validator) if partial.bytes > 0 => Some((partial.bytes, validator.clone())),
            _ => None,
        };
        let opened = self.open(location, resume).await?;
        if opened.from == 0 && partial.bytes > 0 {
            partial.restart().await?;
        }
        partial.validator = opened.validator;
        let total = opened.total;
        if let Some(total) = total
            && total > self.max_bytes
        {
            return Err((self.too_large(total), false));
        }
        let mut body = opened.body;
        let mut reported = Instant::now();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| (format!("the download broke off: {e}"), true))?;
            if partial.bytes + chunk.len() as u64 > self.max_bytes {
                return Err((self.too_large(partial.bytes + chunk.len() as u64), false));
            }
            partial.file.write_all(&chunk).await.map_err(|e| {
                (
                    format!("cannot write {}: {e}", partial.path.display()),
                    false,
                )
            })?;
            partial.hasher.update(&chunk);
            partial.bytes += chunk.len() as u64;
            if reported.elapsed() >= Duration::from_secs(1) {
                reported = Instant::now();
                match total {
                    Some(total) => tracing::info!(
                        source,
                        "downloading: {} of {} MB",
                        partial.bytes >> 20,
                        total >> 20
                    ),
                    None => tracing::info!(source, "downloading: {} MB", partial.bytes >> 20),
                }
            }
        }
        // A body that ends before the size it announced broke off, even when the connection
        // closed cleanly.
        if let Some(total) = total
            && partial.bytes < total
        {
            return Err((
                format!(
                    "the download broke off after {} of {total} bytes",
                    partial.bytes
                ),
                true,
            ));
        }
        Ok(())
    }

    /// The bytes at `location` as they arrive: all of them, or, with `resume` (an offset and
    /// the validator of the file the earlier bytes came from), the rest of the same file when
    /// the source can send it.
    async fn open(
        &self,
        location: &Location,
        resume: Option<(u64, String)>,
    ) -> Result<Opened, (String, bool)> {
        match location {
            Location::Http(url) => {
                let mut request = self.with_auth(self.client.get(url.clone()), url);
                if let Some((from, validator)) = &resume {
                    request = request
                        .header(reqwest::header::RANGE, format!("bytes={from}-"))
                        .header(reqwest::header::IF_RANGE, validator);
                }
                let answer = request.send().await.map_err(|e| {
                    (
                        format!("cannot be fetched: {}", error_chain(&e.without_url())),
                        true,
                    )
                })?;
                let status = answer.status();
                // 416: the offset is past the file's end, so it is not the file the earlier
                // bytes came from: the next attempt starts again.
                if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && resume.is_some() {
                    return Ok(Opened::nothing());
                }
                if !status.is_success() {
                    return Err((
                        format!("the server answered {status} for the file"),
                        status.is_server_error() || status.as_u16() == 429,
                    ));
                }
                let header = |name: reqwest::header::HeaderName| {
                    answer
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                // Only a strong ETag, or else a Last-Modified date, can name the file in an
                // If-Range.
                let validator = header(reqwest::header::ETAG)
                    .filter(|tag| !tag.starts_with("W/"))
                    .or_else(|| header(reqwest::header::LAST_MODIFIED));
                let (from, total) = if status == reqwest::StatusCode::PARTIAL_CONTENT {
                    let range = header(reqwest::header::CONTENT_RANGE).unwrap_or_default();
                    match (resume.as_ref(), content_range(&range)) {
                        (Some((wanted, _)), Some((start, total))) if start == *wanted => {
                            (start, total)
                        }
                        _ => {
                            return Err((
                                format!(
                                    "the server answered a part of the file that was not asked for (Content-Range: {range:?})"
                                ),
                                false,
                            ));
                        }
                    }
                } else {
                    (0, answer.content_length())
                };
                let body = answer
                    .bytes_stream()
                    .map(|chunk| chunk.map_err(|e| error_chain(&e.without_url())));
                Ok(Opened {
                    body: Box::pin(body),
                    from,
                    total,
                    validator,
                })
            }
            Location::S3 { bucket, key } => {
                use object_store::{GetOptions, GetRange, ObjectStore};
                // Credentials, region and endpoint from the usual AWS_* variables; a plain
                // http:// endpoint (a store on the same network, a test's) is allowed as
                // named.
                let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                    .iter()
                    .find_map(|name| std::env::var(name).ok());
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
                    .build()
                    .map_err(|e| (format!("the S3 store cannot be used: {e}"), false))?;
                let path = object_store::path::Path::parse(key).map_err(|e| {
                    (
                        format!("s3://{bucket}/{key} is not a key teal can ask for: {e}"),
                        false,
                    )
                })?;
                let options = match &resume {
                    Some((from, etag)) => GetOptions {
                        range: Some(GetRange::Offset(*from)),
                        if_match: Some(etag.clone()),
                        ..GetOptions::default()
                    },
                    None => GetOptions::default(),
                };
                let got = match store.get_opts(&path, options).await {
                    Ok(got) => got,
                    // Another object under the key since the earlier bytes, or the offset
                    // past its end: the next attempt starts again.
                    Err(object_store::Error::Precondition { .. }) if resume.is_some() => {
                        return Ok(Opened::nothing());
                    }
                    Err(object_store::Error::NotFound { .. }) => {
                        return Err((format!("s3://{bucket}/{key} does not exist"), false));
                    }
                    Err(other) => {
                        return Err((format!("s3://{bucket}/{key} cannot be read: {other}"), true));
                    }
                };
                let total = got.meta.size;
                let from = got.range.start;
                let validator = got.meta.e_tag.clone();
                let body = got
                    .into_stream()
                    .map(|chunk| chunk.map_err(|e| e.to_string()));
                Ok(Opened {
                    body: Box::pin(body),
                    from,
                    total: Some(total),
                    validator,
                })
            }
        }
    }

    /// A small text file (an `MLmodel`) at `location`, whole.
    async fn read_text(&self, location: &Location) -> Result<String, String> {
        let mut body = self.open(location, None).await.map_err(|(e, _)| e)?.body;
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk?);
            if text.len() > 1 << 20 {
                return Err("it is larger than 1 MiB".into());
            }
        }
        String::from_utf8(text).map_err(|_| "it is not text".to_string())
    }

    fn too_large(&self, bytes: u64) -> String {
        format!(
            "the file is larger than server.max_download_bytes ({} bytes; it has at least {bytes}): refused",
            self.max_bytes
        )
    }
}

/// The tracking server's credentials, from MLflow's own variables.
#[derive(Clone, PartialEq, Eq)]
enum MlflowAuth {
    Bearer(String),
    Basic(String, Option<String>),
}

impl std::fmt::Debug for MlflowAuth {
    /// Never the secret itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MlflowAuth::Bearer(_) => "Bearer (hidden)",
            MlflowAuth::Basic(..) => "Basic (hidden)",
        })
    }
}

/// A bearer token (`MLFLOW_TRACKING_TOKEN`), or a user name and password
/// (`MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`), as MLflow's clients read them.
fn mlflow_auth(var: impl Fn(&str) -> Option<String>) -> Option<MlflowAuth> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    match set("MLFLOW_TRACKING_TOKEN") {
        Some(token) => Some(MlflowAuth::Bearer(token)),
        None => set("MLFLOW_TRACKING_USERNAME")
            .map(|user| MlflowAuth::Basic(user, set("MLFLOW_TRACKING_PASSWORD"))),
    }
}

fn at_text(at: &RegistryRef) -> String {
    match at {
        RegistryRef::Alias(alias) => format!("@{alias}"),
        RegistryRef::Version(version) => format!("/{version}"),
    }
}

/// A URL as teal shows it: without a user name, a password or a query (which may carry a
/// signature); anything else unchanged.
pub fn redacted(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(mut url) if matches!(url.scheme(), "http" | "https") => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            if url.query().is_some() {
                url.set_query(Some("..."));
            }
            url.to_string()
        }
        _ => text.to_string(),
    }
}

/// An error with its causes, which reqwest keeps apart ("error sending request" alone says
/// little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The ONNX flavour's file in an `MLmodel` file (YAML): the `data` key under `flavors:` ->
/// `onnx:`. Read line by line: MLflow writes this file in one fixed block layout, and nothing
/// else in it is needed.
fn onnx_flavour_file(mlmodel: &str) -> Result<String, String> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut in_flavours = false;
    // The depth of the flavours' names (the first line under `flavors:` sets it), and
    // whether the lines below the current one belong to the ONNX flavour.
    let mut flavour_depth = None;
    let mut in_onnx = false;
    let mut flavours = Vec::new();
    for line in mlmodel.lines() {
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let depth = indent(line);
        if depth == 0 {
            in_flavours = line.trim_end() == "flavors:";
            continue;
        }
        if !in_flavours {
            continue;
        }
        let flavour_depth = *flavour_depth.get_or_insert(depth);
        if depth == flavour_depth {
            let name = text.trim_end_matches(':').to_string();
            in_onnx = name == "onnx";
            flavours.push(name);
        } else if in_onnx
            && depth > flavour_depth
            && let Some(value) = text.strip_prefix("data:")
        {
            let value = value.trim().trim_matches(['"', '\'']);
            if value.is_empty()
                || value.contains("..")
                || value.contains('%')
                || value.contains('\\')
                || value.starts_with('/')
            {
                return Err(format!(
                    "its ONNX flavour names the file '{value}', which teal will not fetch"
                ));
            }
            return Ok(value.to_string());
        }
    }
    if flavours.iter().any(|f| f == "onnx") {
        return Err("its ONNX flavour names no data file".into());
    }
    Err(format!(
        "it has no ONNX flavour (its flavours: {}): log it with mlflow.onnx.log_model, or serve it as an upstream",
        if flavours.is_empty() {
            "none".to_string()
        } else {
            flavours.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlflow_credentials_go_to_the_tracking_server_only() {
        let mut fetcher = Fetcher::resolver("http://mlflow.example:5000/");
        let header = |fetcher: &Fetcher, url: &str| {
            let request = fetcher
                .with_auth(fetcher.client.get(url), url)
                .build()
                .unwrap();
            request
                .headers()
                .get(reqwest::header::AUTHORIZATION)
                .map(|v| (v.to_str().unwrap().to_string(), v.is_sensitive()))
        };
        let token = |name: &str| (name == "MLFLOW_TRACKING_TOKEN").then(|| "t0k".to_string());
        fetcher.mlflow_auth = mlflow_auth(token);
        assert_eq!(
            header(
                &fetcher,
                "http://mlflow.example:5000/api/2.0/mlflow/registered-models/alias"
            ),
            Some(("Bearer t0k".into(), true))
        );
        assert_eq!(
            header(
                &fetcher,
                "http://mlflow.example:5000/api/2.0/mlflow-artifacts/artifacts/1/model.onnx"
            ),
            Some(("Bearer t0k".into(), true))
        );
        // Another store, another port, another scheme: not the tracking server.
        assert_eq!(header(&fetcher, "http://store.example/model.onnx"), None);
        assert_eq!(header(&fetcher, "http://mlflow.example:5001/x"), None);
        assert_eq!(header(&fetcher, "https://mlflow.example:5000/x"), None);
        // A user and a password, as MLflow's basic-auth app takes them.
        let basic = |name: &str| match name {
            "MLFLOW_TRACKING_USERNAME" => Some("ana".to_string()),
            "MLFLOW_TRACKING_PASSWORD" => Some("pw".to_string()),
            _ => None,
        };
        fetcher.mlflow_auth = mlflow_auth(basic);
        assert_eq!(
            header(&fetcher, "http://mlflow.example:5000/api/2.0/x"),
            Some(("Basic YW5hOnB3".into(), true))
        );
        assert_eq!(format!("{:?}", fetcher.mlflow_auth), "Some(Basic (hidden))");
        // Nothing set, or set empty: no header.
        assert_eq!(mlflow_auth(|_| Some(String::new())), None);
        assert_eq!(mlflow_auth(|_| None), None);
    }

    #[test]
    fn urls_are_shown_without_credentials_or_queries() {
        assert_eq!(
            redacted("https://user:secret@models.example/m.onnx?X-Amz-Signature=abc"),
            "https://models.example/m.onnx?..."
        );
        assert_eq!(redacted("models:/fraud@champion"), "models:/fraud@champion");
        assert_eq!(redacted("s3://b/k"), "s3://b/k");
    }

    #[test]
    fn the_onnx_flavours_file_is_read_from_mlmodel() {
        let mlmodel = "artifact_path: model\nflavors:\n  onnx:\n    code: null\n    data: model.onnx\n    onnx_version: 1.17.0\n    providers:\n    - CPUExecutionProvider\n  python_function:\n    data: model.onnx\n    loader_module: mlflow.onnx\nmlflow_version: 2.20.0\nrun_id: abc\n";
        assert_eq!(onnx_flavour_file(mlmodel).unwrap(), "model.onnx");
        let sklearn = "flavors:\n  python_function:\n    env:\n      conda: conda.yaml\n    loader_module: mlflow.sklearn\n  sklearn:\n    pickled_model: model.pkl\nrun_id: abc\n";
        let error = onnx_flavour_file(sklearn).unwrap_err();
        assert!(
            error.contains("no ONNX flavour (its flavours: python_function, sklearn)"),
            "{error}"
        );
        let escape = "flavors:\n  onnx:\n    data: ../../etc/passwd\n";
        assert!(
            onnx_flavour_file(escape)
                .unwrap_err()
                .contains("will not fetch")
        );
    }
}
