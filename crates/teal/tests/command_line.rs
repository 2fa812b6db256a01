//! The command line itself, run as a user runs it: the version and the commit it names,
//! shell completions, and what a build without the `kubernetes` feature says about the verbs
//! it leaves out.

mod common;

use std::process::{Command, Output};

use common::teal_bin;

fn teal(args: &[&str]) -> Output {
    Command::new(teal_bin())
        .args(args)
        .env_remove("TEAL_LOG_FILE")
        .output()
        .expect("teal runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_version_names_the_release_and_the_commit_it_was_built_from() {
    let output = teal(&["--version"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    let commit = env!("TEAL_BUILD_COMMIT");
    assert_eq!(
        stdout,
        format!("teal {} (commit {commit})\n", env!("CARGO_PKG_VERSION"))
    );
    // A hash from git, or "unknown" when the sources came without their history.
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
}

#[test]
fn completions_print_a_script_for_each_shell() {
    let bash = teal(&["completions", "bash"]);
    assert!(bash.status.success(), "{bash:?}");
    let script = text(&bash.stdout);
    assert!(script.contains("complete -F _teal"), "{script}");
    assert!(script.contains("rollback"), "every verb is completed");
    for shell in ["zsh", "fish"] {
        let output = teal(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {output:?}");
        assert!(text(&output.stdout).contains("rollback"), "{shell}");
    }
}

#[test]
fn completions_help_says_where_to_install_the_script() {
    let output = teal(&["completions", "--help"]);
    assert!(output.status.success(), "{output:?}");
    let help = text(&output.stdout);
    assert!(help.contains("bash-completion/completions/teal"), "{help}");
    assert!(help.contains("fish/completions/teal.fish"), "{help}");
}

#[test]
fn an_unknown_shell_is_refused_with_the_shells_there_are() {
    let output = teal(&["completions", "tcsh"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("invalid value 'tcsh'"), "{stderr}");
    assert!(
        stderr.contains("bash") && stderr.contains("fish"),
        "{stderr}"
    );
}

#[cfg(feature = "kubernetes")]
#[test]
fn the_operator_is_listed_in_a_build_with_kubernetes() {
    let help = text(&teal(&["--help"]).stdout);
    assert!(help.contains("operator"), "{help}");
    let serve = text(&teal(&["serve", "--help"]).stdout);
    assert!(serve.contains("--kubernetes"), "{serve}");
}

#[cfg(not(feature = "kubernetes"))]
#[test]
fn a_build_without_kubernetes_hides_the_cluster_verbs() {
    let help = text(&teal(&["--help"]).stdout);
    assert!(!help.contains("operator"), "{help}");
    let serve = text(&teal(&["serve", "--help"]).stdout);
    assert!(!serve.contains("--kubernetes"), "{serve}");
}

#[cfg(not(feature = "kubernetes"))]
#[test]
fn a_build_without_kubernetes_says_how_to_get_the_cluster_verbs() {
    for args in [
        &["operator"][..],
        &["operator", "--print-crd"],
        &["serve", "--kubernetes"],
    ] {
        let output = teal(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("built without it") && stderr.contains("default features"),
            "{args:?}: {stderr}"
        );
    }
}
