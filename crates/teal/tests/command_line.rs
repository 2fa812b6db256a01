//! The command line itself, run as a user runs it: what a build without the `kubernetes`
//! feature says about the verbs it leaves out.

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
