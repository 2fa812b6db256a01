//! The Kubernetes manifests under deploy/kubernetes: the CRD is what the types generate, and
//! every manifest, the example resource and the objects the operator writes for it validate
//! offline and strictly against the Kubernetes schemas (PyPI `kubernetes-validate`) and the
//! generated CRD's schema (`scripts/validate-manifests`).
// Built only with the `kubernetes` feature (on by default).
#![cfg(feature = "kubernetes")]

mod common;

use std::path::Path;
use std::process::Command;

use teal::kubernetes::crd::{Colour, ModelDeployment};
use teal::kubernetes::operator;

fn validate(files: &[&Path]) -> (bool, String) {
    let output = Command::new(common::python())
        .arg(common::repo_root().join("scripts/validate-manifests"))
        .args(files)
        .output()
        .expect("the checkout's Python runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// A YAML file as JSON (through PyYAML, which the validator uses too).
fn yaml_as_json(path: &Path) -> serde_json::Value {
    let output = Command::new(common::python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("the checkout's Python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn the_committed_crd_is_what_the_types_generate() {
    let committed =
        std::fs::read_to_string(common::repo_root().join("deploy/kubernetes/crd.yaml")).unwrap();
    assert!(
        committed == teal::kubernetes::crd_yaml(),
        "deploy/kubernetes/crd.yaml is out of date: run `cargo run -p teal -- operator --print-crd > deploy/kubernetes/crd.yaml`"
    );
    // And a YAML parser reads back exactly the CRD the types describe.
    use kube::CustomResourceExt;
    let parsed = yaml_as_json(&common::repo_root().join("deploy/kubernetes/crd.yaml"));
    assert_eq!(
        parsed,
        serde_json::to_value(ModelDeployment::crd()).unwrap()
    );
}

/// Every document of a YAML file, as JSON.
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let output = Command::new(common::python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("the checkout's Python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn the_gateway_exposes_data_and_metrics_only_and_a_network_policy_admits_just_those() {
    let root = common::repo_root().join("deploy/kubernetes");
    let gateway = &yaml_documents(&root.join("gateway.yaml"))[0];
    let container = &gateway["spec"]["template"]["spec"]["containers"][0];
    let env: std::collections::BTreeMap<String, String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let admin: std::net::SocketAddr = env["TEAL_ADMIN_LISTEN"].parse().unwrap();
    assert!(admin.ip().is_loopback(), "{admin}");
    assert_eq!(env["TEAL_ADMIN_LISTEN"], teal::core::config::DEFAULT_ADMIN);
    assert_eq!(env["TEAL_METRICS_LISTEN"], "0.0.0.0:8091");
    let ports: Vec<u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8080, 8091], "the admin port is not exposed");
    // networkpolicy.yaml holds two documents: the gateway's, then the operator's.
    let policies = yaml_documents(&root.join("networkpolicy.yaml"));
    let admitted: Vec<u64> = policies[0]["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap().clone())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(admitted, [8080, 8091]);
    assert_eq!(policies[1]["spec"]["ingress"], serde_json::json!([]));
}

#[test]
fn every_manifest_validates_strictly() {
    let (ok, text) = validate(&[]);
    assert!(ok, "{text}");
    for expected in [
        "CustomResourceDefinition/modeldeployments.teal.dev",
        "ClusterRole/teal-operator",
        "Role/teal-operator-leader",
        "Deployment/teal-operator",
        "Deployment/teal-gateway",
        "Service/teal-gateway",
        "NetworkPolicy/teal-gateway",
        "NetworkPolicy/teal-operator",
        "ModelDeployment/digits (the generated CRD's schema, strict)",
        "ModelDeployment/digits: spec.blue.template",
    ] {
        assert!(
            text.contains(expected),
            "{expected} was not checked:\n{text}"
        );
    }
}

#[test]
fn the_example_is_a_valid_resource_and_what_the_operator_writes_for_it_validates() {
    let example = yaml_as_json(&common::repo_root().join("deploy/kubernetes/examples/digits.yaml"));
    let mut md: ModelDeployment =
        serde_json::from_value(example).expect("the types read the example");
    assert_eq!(md.spec.problem(), None);
    md.metadata.uid = Some("5e1f0c2a-0000-4000-8000-000000000003".into());
    let mut objects = Vec::new();
    for colour in [Colour::Blue, Colour::Green] {
        objects.push(operator::deployment(&md, colour, md.spec.replicas));
        objects.push(operator::service(
            &md,
            &operator::colour_service(&md, colour),
            colour,
            "colour",
        ));
    }
    objects.push(operator::service(
        &md,
        &operator::active_service(&md),
        Colour::Blue,
        "active",
    ));
    let dir = common::temp_dir("manifests");
    let written = dir.join("written.yaml");
    let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    std::fs::write(&written, text.join("\n---\n")).unwrap();
    let (ok, text) = validate(&[&written]);
    assert!(ok, "{text}");
    assert_eq!(text.matches("ok   ").count(), 5, "{text}");
}

#[test]
fn a_colour_with_a_source_gets_its_file_from_an_init_container_and_still_validates() {
    let example = yaml_as_json(&common::repo_root().join("deploy/kubernetes/examples/digits.yaml"));
    let mut md: ModelDeployment =
        serde_json::from_value(example).expect("the types read the example");
    md.metadata.uid = Some("5e1f0c2a-0000-4000-8000-000000000004".into());
    let pin = "ab".repeat(32);
    md.spec.mlflow_uri = Some("http://mlflow.mlops:5000".into());
    md.spec.source_secret = Some("model-store".into());
    let blue = md.spec.blue.as_mut().unwrap();
    blue.source = Some("models:/digits/3".into());
    blue.sha256 = Some(pin.clone());
    assert_eq!(md.spec.problem(), None);
    let deployment = operator::deployment(&md, Colour::Blue, 2);
    let pod = &deployment["spec"]["template"];
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["name"], "teal-fetch");
    assert_eq!(
        init["args"],
        serde_json::json!([
            "fetch",
            "models:/digits/3",
            "--output",
            "/mnt/models/model.onnx",
            "--sha256",
            pin
        ])
    );
    assert_eq!(init["env"][0]["value"], "http://mlflow.mlops:5000");
    assert_eq!(init["envFrom"][0]["secretRef"]["name"], "model-store");
    assert_eq!(init["securityContext"]["readOnlyRootFilesystem"], true);
    for container in pod["spec"]["containers"].as_array().unwrap() {
        let mounts = container["volumeMounts"].as_array().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["mountPath"] == "/mnt/models" && m["readOnly"] == true),
            "{container}"
        );
        assert!(
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "TEAL_MODEL_FILE"),
            "{container}"
        );
        assert!(
            container.get("envFrom").is_none(),
            "the Secret stays with the fetcher"
        );
    }
    assert_eq!(
        pod["metadata"]["annotations"]["teal.dev/source"],
        "models:/digits/3"
    );
    // The Deployment is still one the API server takes, and the green colour, without a
    // source, has no fetcher.
    let dir = common::temp_dir("manifests");
    let written = dir.join("sourced.yaml");
    std::fs::write(&written, deployment.to_string()).unwrap();
    let (ok, text) = validate(&[&written]);
    assert!(ok, "{text}");
    assert!(
        operator::deployment(&md, Colour::Green, 2)["spec"]["template"]["spec"]
            .get("initContainers")
            .is_none()
    );
}

#[test]
fn a_typo_in_a_resource_or_its_pod_template_is_caught() {
    let example =
        std::fs::read_to_string(common::repo_root().join("deploy/kubernetes/examples/digits.yaml"))
            .unwrap();
    let dir = common::temp_dir("manifests");
    for (from, to, field) in [
        (
            "  observationSeconds: 300",
            "  observationSecond: 300",
            "observationSecond",
        ),
        (
            "            readinessProbe:",
            "            readynessProbe:",
            "readynessProbe",
        ),
        ("  replicas: 2", "  replicas: two", "replicas"),
    ] {
        assert!(example.contains(from));
        let path = dir.join("typo.yaml");
        std::fs::write(&path, example.replacen(from, to, 1)).unwrap();
        let (ok, text) = validate(&[&path]);
        assert!(!ok, "{field} passed:\n{text}");
        assert!(text.contains("FAIL"), "{text}");
    }
}
