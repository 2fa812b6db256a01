//! teal takes ONNX Runtime from its checkout's own virtual environment (`.venv`, which
//! `scripts/setup` makes) without it being active, whatever `python3` is first on the PATH;
//! and `scripts/setup` works with a stock distribution's Python (Debian's, which refuses
//! `pip install` into itself) first on the PATH.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// Debian's own Python: externally managed, without onnxruntime.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// The PATH with `/usr/bin` (Debian's `python3`) first.
fn debian_python_first() -> String {
    format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default())
}

/// A command with no Python environment active and nothing pointing at ONNX Runtime.
fn without_python_hints(command: &mut Command) -> &mut Command {
    for name in [
        "ORT_DYLIB_PATH",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "TEAL_PYTHON",
    ] {
        command.env_remove(name);
    }
    command.env("PATH", debian_python_first())
}

/// Starts `teal serve` on the digits model with `teal`, waits until it is ready (the model
/// loaded and its reference outputs reproduced), stops it, and returns the ONNX Runtime
/// library it says it loaded.
fn library_loaded_by(teal: &Path) -> PathBuf {
    let dir = temp_dir("ort-location");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nstate_dir = \"{state}\"\n\n[[model]]\nname = \"digits\"\n[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\npath = \"{model}\"\nreference = \"{reference}\"\n",
        state = dir.join("state").display(),
        model = repo_root().join("models/digits/v1/model.onnx").display(),
        reference = repo_root()
            .join("models/digits/v1/reference.json")
            .display(),
    );
    std::fs::write(dir.join("teal.toml"), config).unwrap();
    let log = dir.join("teal.log");
    let mut command = Command::new(teal);
    without_python_hints(&mut command)
        .args(["serve", "--config"])
        .arg(dir.join("teal.toml"))
        .args(["--log-format", "json", "--log-file"])
        .arg(&log)
        .env("TEAL_LOG", "info")
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = spawn_group(&mut command);
    let mut line = String::new();
    std::io::BufReader::new(proc.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    drop(proc);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        line.starts_with("teal ready:"),
        "teal did not start: {line:?}\n{text}"
    );
    let library = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "ONNX Runtime loaded")
        .and_then(|l| l["fields"]["library"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("no \"ONNX Runtime loaded\" line in the log:\n{text}"));
    let _ = std::fs::remove_dir_all(&dir);
    library
}

#[test]
fn teal_finds_onnx_runtime_in_its_checkouts_venv_with_another_python_first_on_the_path() {
    let library = library_loaded_by(&teal_bin());
    let venv = repo_root().join(".venv");
    assert!(
        library.starts_with(&venv),
        "{} is not in {}",
        library.display(),
        venv.display()
    );
}

/// A stand-in checkout: `scripts/setup`, `requirements.txt` and a `Cargo.toml`, with the
/// test build's teal at `target/debug/teal`, under cargo's temporary folder for tests (on the
/// same file system as the binary, so it is a hard link, not a copy).
fn stand_in_checkout() -> PathBuf {
    let checkout = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "setup-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(checkout.join("scripts")).unwrap();
    std::fs::create_dir_all(checkout.join("target/debug")).unwrap();
    std::fs::copy(
        repo_root().join("scripts/setup"),
        checkout.join("scripts/setup"),
    )
    .unwrap();
    std::fs::copy(
        repo_root().join("requirements.txt"),
        checkout.join("requirements.txt"),
    )
    .unwrap();
    std::fs::write(checkout.join("Cargo.toml"), "").unwrap();
    let teal = checkout.join("target/debug/teal");
    if std::fs::hard_link(teal_bin(), &teal).is_err() {
        std::fs::copy(teal_bin(), &teal).unwrap();
    }
    checkout
}

fn run_setup(checkout: &Path) -> std::process::Output {
    let mut command = Command::new(checkout.join("scripts/setup"));
    without_python_hints(&mut command)
        .output()
        .expect("scripts/setup runs")
}

#[test]
fn setup_makes_a_venv_with_the_debian_python_first_on_the_path_and_teal_uses_it() {
    if !Path::new(DEBIAN_PYTHON).exists() {
        eprintln!("skipped: no {DEBIAN_PYTHON} on this machine");
        return;
    }
    let checkout = stand_in_checkout();

    let first = run_setup(&checkout);
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "scripts/setup failed:\n{said}");
    let venv = checkout.join(".venv");
    // The environment is made from Debian's Python, the first on the PATH, which it
    // leaves as it was.
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).unwrap();
    assert!(
        cfg.lines().any(|l| l.replace(' ', "") == "home=/usr/bin"),
        "{cfg}"
    );
    let in_debian = Command::new(DEBIAN_PYTHON)
        .args(["-c", "import onnxruntime"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !in_debian.success(),
        "onnxruntime must not be in Debian's Python for this test to mean anything"
    );

    // Run again, it installs nothing.
    let second = run_setup(&checkout);
    assert!(second.status.success());
    assert_eq!(String::from_utf8_lossy(&second.stderr), "", "{said}");

    let library = library_loaded_by(&checkout.join("target/debug/teal"));
    assert!(
        library.starts_with(&venv),
        "{} is not in {}",
        library.display(),
        venv.display()
    );
    let _ = std::fs::remove_dir_all(&checkout);
}
