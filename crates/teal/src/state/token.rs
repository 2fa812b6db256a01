//! The admin token file in the state folder, and the owner-only folder and files it needs.

use std::path::{Path, PathBuf};

/// Where the CLI finds the token and the admin address teal wrote.
pub const TOKEN_FILE: &str = "admin.token";
pub const ADMIN_URL_FILE: &str = "admin.url";

/// The admin token: `TEAL_ADMIN_TOKEN` when set, otherwise the one in the state folder,
/// otherwise a new random one written there with mode 0600.
pub fn load_or_create_token(
    state_dir: &Path,
    from_env: Option<String>,
) -> std::io::Result<(String, String)> {
    if let Some(token) = from_env.filter(|t| !t.trim().is_empty()) {
        return Ok((
            token.trim().to_string(),
            "the token is TEAL_ADMIN_TOKEN".to_string(),
        ));
    }
    let path = token_path(state_dir);
    // Said to callers without the token, so it names the file but not where the state
    // folder is; `teal serve` prints the whole path to whoever started it.
    let hint = format!("the token is in the {TOKEN_FILE} file in teal's state folder");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok((existing, hint));
        }
    }
    create_private_dir(state_dir)?;
    let mut bytes = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &token)?;
    Ok((token, hint))
}

/// Compares a presented secret with the expected one in time that does not depend on where
/// the first difference is (the admin token, the feedback token).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

/// Creates the state folder readable by its owner only.
/// A folder that already existed keeps its permissions (it may be shared on purpose), but
/// one others can read is logged, since it holds the token and the state file.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "the state folder is open to other users; its files are private, but consider chmod 700"
        );
    }
    Ok(())
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("teal-token-{}", fastrand::u64(..)));
        let (first, _) = load_or_create_token(&dir, None).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(token_path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, _) = load_or_create_token(&dir, None).unwrap();
        assert_eq!(first, second);
        let (env, hint) = load_or_create_token(&dir, Some("from-env".into())).unwrap();
        assert_eq!(env, "from-env");
        assert!(hint.contains("TEAL_ADMIN_TOKEN"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
