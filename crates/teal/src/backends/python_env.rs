//! The Python environments teal takes ONNX Runtime (the PyPI `onnxruntime` package ships its
//! library) and a Python interpreter from, whether or not one is active and whatever
//! `python3` is first on the PATH.
//!
//! In order: the environment teal's own executable was installed into (a wheel in a virtual
//! environment, `pip install --user`), the `.venv` of the checkout the executable was built
//! in (`target/…/teal`, where `scripts/setup` puts the packages), and the `.venv` of the
//! checkout this binary was compiled from (for `cargo install --path crates/teal`).

use std::path::{Path, PathBuf};

/// The prefixes (folders holding `bin/` and `lib/`) of the environments teal looks in, in
/// order, without duplicates and only those that exist.
pub fn search_order() -> Vec<PathBuf> {
    let exe = std::env::current_exe().ok();
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    candidates(exe.as_deref(), &built_from)
}

/// [`search_order`] for a given executable and checkout, so tests can lay out their own.
pub fn candidates(exe: Option<&Path>, built_from: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut push = |dir: PathBuf| {
        if let Ok(dir) = dir.canonicalize()
            && dir.is_dir()
            && !found.contains(&dir)
        {
            found.push(dir);
        }
    };
    if let Some(exe) = exe {
        // `<prefix>/bin/teal`: the environment the executable is in.
        if let Some(prefix) = exe.parent().and_then(Path::parent)
            && prefix.join("lib").is_dir()
        {
            push(prefix.to_path_buf());
        }
        if let Some(checkout) = checkout_of(exe) {
            push(checkout.join(".venv"));
        }
    }
    push(built_from.join(".venv"));
    found
}

/// The checkout holding a cargo-built executable: the folder with `Cargo.toml` above the
/// nearest `target` folder the executable sits in.
fn checkout_of(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
        .filter(|checkout| checkout.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

/// The folders of an environment that hold installed packages, newest Python first:
/// `lib/python3.*/site-packages` (and Debian's `dist-packages`).
pub fn package_dirs(prefix: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
        return Vec::new();
    };
    let mut pythons: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let minor = name.to_str()?.strip_prefix("python3.")?.parse().ok()?;
            Some((minor, e.path()))
        })
        .collect();
    pythons.sort_by_key(|p| std::cmp::Reverse(p.0));
    pythons
        .into_iter()
        .flat_map(|(_, dir)| [dir.join("site-packages"), dir.join("dist-packages")])
        .filter(|dir| dir.is_dir())
        .collect()
}

/// An environment's interpreter, when it has one (`pip install --user` puts none beside
/// teal).
pub fn interpreter(prefix: &Path) -> Option<PathBuf> {
    ["bin/python3", "bin/python"]
        .into_iter()
        .map(|name| prefix.join(name))
        .find(|path| path.is_file())
}

/// The interpreters teal may run a Python model server with: each environment's in
/// [`search_order`], then `python3` from the PATH.
pub fn interpreters() -> Vec<PathBuf> {
    search_order()
        .iter()
        .filter_map(|prefix| interpreter(prefix))
        .chain(std::iter::once(PathBuf::from("python3")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "teal-python-env-{what}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.canonicalize().unwrap()
    }

    #[test]
    fn the_executables_own_environment_comes_before_any_checkout() {
        let root = temp("order");
        let venv = root.join("venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::create_dir_all(venv.join("lib")).unwrap();
        let checkout = root.join("checkout");
        std::fs::create_dir_all(checkout.join(".venv")).unwrap();
        let found = candidates(Some(&venv.join("bin/teal")), &checkout);
        assert_eq!(found, vec![venv, checkout.join(".venv")]);
    }

    #[test]
    fn a_binary_in_a_checkouts_target_folder_uses_that_checkouts_venv() {
        let root = temp("target");
        let checkout = root.join("teal");
        std::fs::create_dir_all(checkout.join("target/debug/deps")).unwrap();
        std::fs::create_dir_all(checkout.join(".venv")).unwrap();
        std::fs::write(checkout.join("Cargo.toml"), "").unwrap();
        let elsewhere = root.join("nowhere");
        for exe in ["target/debug/teal", "target/debug/deps/rollout-0123"] {
            let found = candidates(Some(&checkout.join(exe)), &elsewhere);
            assert!(found.contains(&checkout.join(".venv")), "{exe}: {found:?}");
        }
        // A `target` folder that is not in a cargo checkout names no venv.
        std::fs::remove_file(checkout.join("Cargo.toml")).unwrap();
        let found = candidates(Some(&checkout.join("target/debug/teal")), &elsewhere);
        assert!(!found.contains(&checkout.join(".venv")), "{found:?}");
    }

    #[test]
    fn package_folders_are_found_for_any_python_3_newest_first() {
        let prefix = temp("lib");
        for dir in [
            "lib/python3.9/site-packages",
            "lib/python3.12/site-packages",
            "lib/python3.11/dist-packages",
        ] {
            std::fs::create_dir_all(prefix.join(dir)).unwrap();
        }
        assert_eq!(
            package_dirs(&prefix),
            vec![
                prefix.join("lib/python3.12/site-packages"),
                prefix.join("lib/python3.11/dist-packages"),
                prefix.join("lib/python3.9/site-packages"),
            ]
        );
        assert!(package_dirs(&prefix.join("absent")).is_empty());
    }
}
