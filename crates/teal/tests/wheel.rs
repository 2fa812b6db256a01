//! The Python wheel (`scripts/wheel`, crates/teal/pyproject.toml): installed into a fresh
//! virtual environment, its `teal` runs the demo with ONNX Runtime from that environment,
//! with nothing on the PATH that has ONNX Runtime.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn the_onnxruntime_pin_is_the_same_for_the_wheel_the_setup_and_the_binary() {
    let pin = format!("onnxruntime=={}", teal::backends::onnx::ONNXRUNTIME_VERSION);
    let requirements = std::fs::read_to_string(repo_root().join("requirements.txt")).unwrap();
    assert!(
        requirements.lines().any(|l| l.trim() == pin),
        "requirements.txt does not pin {pin}"
    );
    let pyproject =
        std::fs::read_to_string(repo_root().join("crates/teal/pyproject.toml")).unwrap();
    assert!(
        pyproject.contains(&format!("dependencies = [\"{pin}\"]")),
        "crates/teal/pyproject.toml does not depend on {pin}"
    );
    let setup = std::fs::read_to_string(repo_root().join("scripts/setup")).unwrap();
    assert!(setup.contains(&pin), "scripts/setup does not check {pin}");
}

/// Runs `command` with its output in files, killed after `limit`; returns whether it
/// succeeded, its standard output and its standard error.
fn run_bounded(command: &mut Command, limit: Duration, dir: &Path) -> (bool, String, String) {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    command
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null());
    let mut proc = spawn_group(command);
    let deadline = Instant::now() + limit;
    let success = loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            proc.1 = true;
            break status.success();
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(proc);
    let read = |path: &Path| {
        let mut text = String::new();
        let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text));
        text
    };
    (success, read(&out), read(&err))
}

/// The wheel `scripts/wheel --dev` builds (quickly, with cargo's dev profile).
fn build_wheel(dir: &Path) -> PathBuf {
    let (ok, out, err) = run_bounded(
        Command::new(repo_root().join("scripts/wheel")).arg("--dev"),
        Duration::from_secs(1200),
        dir,
    );
    assert!(ok, "scripts/wheel --dev failed:\n{err}");
    let wheel = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    assert!(wheel.is_absolute() || wheel.starts_with("target"), "{out}");
    repo_root().join(wheel)
}

#[test]
fn the_wheel_installs_into_a_fresh_venv_and_its_teal_runs_the_demo_with_onnx_runtime_from_there() {
    let dir = temp_dir("wheel");
    let wheel = build_wheel(&dir);

    // A stock distribution's Python when there is one (Debian's), else the first on the PATH.
    let python = ["/usr/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("python3");
    let venv = dir.join("venv");
    let made = Command::new(python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success(), "{python} -m venv failed");
    let (ok, _, err) = run_bounded(
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(&wheel),
        Duration::from_secs(600),
        &dir,
    );
    assert!(ok, "pip install {} failed:\n{err}", wheel.display());
    let teal = venv.join("bin/teal");
    assert!(
        teal.is_file(),
        "the wheel put no teal in {}",
        venv.display()
    );

    // Not activated, from an unrelated folder, with a PATH whose Pythons have no ONNX Runtime.
    let work = dir.join("elsewhere");
    std::fs::create_dir_all(&work).unwrap();
    let mut demo = Command::new(&teal);
    demo.args(["demo", "--requests", "300", "--clients", "2"])
        .current_dir(&work)
        .env("PATH", "/usr/bin:/bin")
        .env("TEAL_LOG", "warn,teal::backends::onnx=info")
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("VIRTUAL_ENV")
        .env_remove("PYTHONPATH");
    let (ok, out, err) = run_bounded(&mut demo, Duration::from_secs(300), &dir);
    assert!(ok, "teal demo failed or took over 5 minutes:\n{out}\n{err}");
    let loaded = err
        .lines()
        .find(|l| l.contains("ONNX Runtime loaded"))
        .unwrap_or_else(|| panic!("no \"ONNX Runtime loaded\" line:\n{err}"));
    assert!(
        loaded.contains(&format!("{}/lib/python3.", venv.display())),
        "ONNX Runtime came from outside the wheel's environment: {loaded}"
    );
    // The demo's third rollout runs a Python model server, with the environment's Python.
    assert!(!out.contains("rollout #3 skipped"), "{out}");
    assert!(out.contains("rollout #3"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
