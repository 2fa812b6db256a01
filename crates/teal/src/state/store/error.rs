//! The store's error, and which failures mean the state file cannot take writes.

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("state file: {message}")]
pub struct StoreError {
    message: String,
    unwritable: bool,
}

impl StoreError {
    pub(super) fn new(message: String) -> StoreError {
        StoreError {
            message,
            unwritable: false,
        }
    }

    /// The state file cannot take writes: the disk (or `state_max_bytes`) is full, or the
    /// file or its folder is read-only. Nothing the caller sent is at fault.
    pub fn unwritable(&self) -> bool {
        self.unwritable
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        let unwritable = matches!(
            e.sqlite_error_code(),
            Some(DiskFull | ReadOnly | SystemIoFailure | CannotOpen | PermissionDenied)
        );
        StoreError {
            message: e.to_string(),
            unwritable,
        }
    }
}
