//! Where a model file comes from when it is not a local path: a version in an MLflow model
//! registry or a URL. Parsing only; fetching is the binary's.

use std::fmt;

/// A model file's source, as a slot's `source` or `teal deploy --from` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `models:/NAME@ALIAS` or `models:/NAME/VERSION` on the MLflow tracking server.
    Registry {
        /// The registered model's name.
        name: String,
        /// Which of its versions.
        at: RegistryRef,
    },
    /// `https://...` or `http://...`: the file itself.
    Url(String),
    /// `s3://BUCKET/KEY` on any S3-compatible store, with the usual `AWS_*` environment
    /// variables (credentials, region, endpoint).
    S3 {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
    },
}

/// A registered model's version, by alias or by number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryRef {
    /// The version an alias (`@champion`) points at when it is read.
    Alias(String),
    /// A version number.
    Version(u64),
}

impl Source {
    /// Whether `text` names a source rather than a local path (it has a scheme teal knows
    /// or one it refuses with a reason).
    pub fn looks_like(text: &str) -> bool {
        ["models:/", "http://", "https://", "s3://", "gs://"]
            .iter()
            .any(|scheme| text.starts_with(scheme))
    }

    /// Reads a source, or says what is wrong with it and what would be right.
    pub fn parse(text: &str) -> Result<Source, String> {
        if let Some(rest) = text.strip_prefix("models:/") {
            let (name, at) = match rest.split_once('@') {
                Some((name, alias)) => {
                    if alias.is_empty() || !alias.bytes().all(registry_byte) {
                        return Err(format!(
                            "'{text}': the alias after '@' must be letters, digits, '-', '_' or '.'"
                        ));
                    }
                    (name, RegistryRef::Alias(alias.to_string()))
                }
                None => match rest.rsplit_once('/') {
                    Some((name, version)) => match version.parse::<u64>() {
                        Ok(n) if n > 0 => (name, RegistryRef::Version(n)),
                        _ => {
                            return Err(format!(
                                "'{text}': the version after the last '/' must be a number from 1"
                            ));
                        }
                    },
                    None => {
                        return Err(format!(
                            "'{text}' names no version: write models:/NAME@ALIAS or models:/NAME/VERSION"
                        ));
                    }
                },
            };
            if name.is_empty() || !name.bytes().all(|b| registry_byte(b) || b == b' ') {
                return Err(format!(
                    "'{text}': the registered model's name must be letters, digits, spaces, '-', '_' or '.'"
                ));
            }
            return Ok(Source::Registry {
                name: name.to_string(),
                at,
            });
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            let host = text.split_once("://").map_or("", |(_, rest)| rest);
            let host = host.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("'{text}' is not a URL teal can fetch"));
            }
            return Ok(Source::Url(text.to_string()));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key))
                    if !bucket.is_empty()
                        && !key.is_empty()
                        && !text.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    Ok(Source::S3 {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                    })
                }
                _ => Err(format!("'{text}' names no object: write s3://BUCKET/KEY")),
            };
        }
        if text.starts_with("gs://") {
            return Err(format!(
                "'{text}': Google Cloud Storage is not a source yet; give an https:// URL to the object (a signed one works), an s3:// object or a models:/ registry version"
            ));
        }
        Err(format!(
            "'{text}' is not a source teal knows: use models:/NAME@ALIAS, models:/NAME/VERSION, s3://BUCKET/KEY or an https:// URL"
        ))
    }
}

fn registry_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Registry {
                name,
                at: RegistryRef::Alias(alias),
            } => write!(f, "models:/{name}@{alias}"),
            Source::Registry {
                name,
                at: RegistryRef::Version(version),
            } => write!(f, "models:/{name}/{version}"),
            Source::Url(url) => f.write_str(url),
            Source::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_versions_aliases_and_urls_parse_and_print_back() {
        for text in [
            "models:/fraud@champion",
            "models:/fraud/7",
            "https://models.example/fraud/v7/model.onnx",
            "http://127.0.0.1:9000/model.onnx",
            "s3://models/fraud/v7/model.onnx",
        ] {
            assert_eq!(Source::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Source::parse("models:/fraud@champion").unwrap(),
            Source::Registry {
                name: "fraud".into(),
                at: RegistryRef::Alias("champion".into())
            }
        );
    }

    #[test]
    fn malformed_sources_are_refused_with_what_would_be_right() {
        for (text, says) in [
            (
                "models:/fraud",
                "models:/NAME@ALIAS or models:/NAME/VERSION",
            ),
            ("models:/fraud/latest", "must be a number"),
            ("models:/fraud/0", "must be a number"),
            ("models:/fraud@", "alias"),
            ("models:/@champion", "registered model's name"),
            ("models:/a/b@c d", "alias"),
            ("https://", "not a URL"),
            ("https://host/a b", "not a URL"),
            ("s3://bucket", "write s3://BUCKET/KEY"),
            ("s3:///key", "write s3://BUCKET/KEY"),
            ("gs://bucket/key", "not a source yet"),
            ("ftp://host/model.onnx", "not a source teal knows"),
        ] {
            let error = Source::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
