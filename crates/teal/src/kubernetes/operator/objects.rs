//! The objects the operator owns: a Deployment per colour, a Service per colour (a stable
//! selector that gates, checks and gateways use), and in `service` mode the active and
//! preview Services whose selectors are the switch. Their names, labels and selectors are
//! decided here and nowhere else, so the gateway and the manifests agree with the operator.
//!
//! The operator writes only objects it made: before it applies or scales one, it reads it,
//! and an object of that name that exists without this resource's owner reference or teal's
//! labels for it is left alone ([`Error::NotOurs`]), so naming someone's Service as the
//! `activeService` cannot redirect its traffic, nor can a resource take another's objects.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error, MANAGER};
use crate::kubernetes::crd::{Colour, ModelDeployment, SwitchMode};

/// The resource's namespace; a resource read without one is in `default`, as the API
/// server treats it.
pub fn namespace(md: &ModelDeployment) -> String {
    md.namespace().unwrap_or_else(|| "default".into())
}

/// The key under which this process remembers a resource: its uid, so a resource deleted
/// and created again under the same name starts afresh.
pub(super) fn uid(md: &ModelDeployment) -> String {
    md.uid().unwrap_or_else(|| md.name_any())
}

/// The Deployment of one colour, named after the resource so that `kubectl get deploy`
/// shows whose it is and which colour.
pub fn deployment_name(md: &ModelDeployment, colour: Colour) -> String {
    format!("{}-{}", md.name_any(), colour.name())
}

/// The Service that always selects one colour's pods (gates, checks and gateways use it).
pub fn colour_service(md: &ModelDeployment, colour: Colour) -> String {
    format!("{}-{}", md.name_any(), colour.name())
}

/// The Service clients call in `service` mode, whose selector the switch moves: the one the
/// spec names, or the resource's own name.
pub fn active_service(md: &ModelDeployment) -> String {
    md.spec
        .active_service
        .clone()
        .unwrap_or_else(|| md.name_any())
}

fn labels(md: &ModelDeployment, colour: Colour) -> serde_json::Value {
    json!({
        "app.kubernetes.io/name": "teal-model",
        "app.kubernetes.io/instance": md.name_any(),
        "app.kubernetes.io/managed-by": "teal",
        "teal.dev/model-deployment": md.name_any(),
        "teal.dev/colour": colour.name(),
    })
}

fn selector(md: &ModelDeployment, colour: Colour) -> serde_json::Value {
    json!({ "teal.dev/model-deployment": md.name_any(), "teal.dev/colour": colour.name() })
}

fn owner(md: &ModelDeployment) -> serde_json::Value {
    json!([md.controller_owner_ref(&())])
}

/// The Deployment of one colour, as the operator applies it; public so the committed
/// example manifests can be checked against what the operator would write.
pub fn deployment(md: &ModelDeployment, colour: Colour, replicas: i32) -> serde_json::Value {
    let spec = md.spec.colour(colour);
    let template = spec
        .and_then(|c| c.template.clone())
        .or_else(|| md.spec.template.clone())
        .unwrap_or_default();
    let mut template = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    let version = spec.map(|c| c.version.clone()).unwrap_or_default();
    let mut pod_labels = labels(md, colour);
    pod_labels["teal.dev/version"] = json!(version);
    if let Some(existing) = template["metadata"]["labels"].as_object() {
        for (k, v) in existing {
            pod_labels
                .as_object_mut()
                .map(|l| l.entry(k.clone()).or_insert(v.clone()));
        }
    }
    template["metadata"]["labels"] = pod_labels;
    if let Some(image) = spec.and_then(|c| c.image.clone()) {
        match template["spec"]["containers"].as_array_mut() {
            Some(containers) if !containers.is_empty() => containers[0]["image"] = json!(image),
            _ => {
                // The shortcut's container runs with least privilege; a template says
                // otherwise when a model server needs more. `/tmp` is writable (an emptyDir),
                // as model servers commonly need it.
                template["spec"]["containers"] = json!([{
                    "name": "model-server",
                    "image": image,
                    "ports": [{ "name": "http", "containerPort": md.spec.port }],
                    "readinessProbe": {
                        "httpGet": { "path": format!("/v2/models/{}/ready", md.spec.model), "port": md.spec.port },
                        "periodSeconds": 2
                    },
                    "securityContext": restricted_security_context(),
                    "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
                }]);
                let tmp = json!({ "name": "tmp", "emptyDir": {} });
                match template["spec"]["volumes"].as_array_mut() {
                    Some(volumes) => volumes.push(tmp),
                    None => template["spec"]["volumes"] = json!([tmp]),
                }
                if template["spec"]["securityContext"].is_null() {
                    template["spec"]["securityContext"] = json!({
                        "runAsNonRoot": true,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    });
                }
            }
        }
    }
    if let Some(colour_spec) = spec
        && let Some(source) = &colour_spec.source
    {
        fetch_into_pods(&mut template, md, colour_spec, source);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(md, colour),
            "namespace": namespace(md),
            "labels": labels(md, colour),
            "annotations": { "teal.dev/version": version },
            "ownerReferences": owner(md),
        },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": selector(md, colour) },
            "template": template,
        }
    })
}

/// Where a colour's fetched model file is, in each of its pods.
pub const MODEL_DIR: &str = "/mnt/models";
pub const MODEL_FILE: &str = "/mnt/models/model.onnx";

/// The image of the init container that fetches a colour's `source`: `TEAL_FETCH_IMAGE` in
/// the operator's environment (its manifest sets it to the operator's own image), else the
/// image of this teal's version.
pub fn fetch_image() -> String {
    std::env::var("TEAL_FETCH_IMAGE")
        .ok()
        .filter(|image| !image.is_empty())
        .unwrap_or_else(|| concat!("teal:", env!("CARGO_PKG_VERSION")).to_string())
}

/// Gives a colour's pods its `source`'s file, as KServe's storage initializer does: an
/// init container runs `teal fetch` (checking the pin) into an emptyDir that every container
/// mounts read-only at [`MODEL_DIR`], with the file's path in `TEAL_MODEL_FILE`. The
/// spec's `sourceSecret` goes to the init container alone; the source is an annotation of
/// the pods, so that another source starts new pods even under the same version name.
fn fetch_into_pods(
    template: &mut serde_json::Value,
    md: &ModelDeployment,
    colour: &crate::kubernetes::crd::ColourSpec,
    source: &str,
) {
    const VOLUME: &str = "teal-model";
    let mut args = vec![
        json!("fetch"),
        json!(source),
        json!("--output"),
        json!(MODEL_FILE),
    ];
    if let Some(pin) = &colour.sha256 {
        args.extend([json!("--sha256"), json!(pin)]);
    }
    let mut fetch = json!({
        "name": "teal-fetch",
        "image": fetch_image(),
        "args": args,
        "volumeMounts": [{ "name": VOLUME, "mountPath": MODEL_DIR }],
        "securityContext": restricted_security_context(),
    });
    if let Some(uri) = &md.spec.mlflow_uri {
        fetch["env"] = json!([{ "name": "MLFLOW_TRACKING_URI", "value": uri }]);
    }
    if let Some(secret) = &md.spec.source_secret {
        fetch["envFrom"] = json!([{ "secretRef": { "name": secret } }]);
    }
    let pod = &mut template["spec"];
    if let Some(containers) = pod["containers"].as_array_mut() {
        for container in containers {
            let mount = json!({ "name": VOLUME, "mountPath": MODEL_DIR, "readOnly": true });
            match container["volumeMounts"].as_array_mut() {
                Some(mounts) => mounts.push(mount),
                None => container["volumeMounts"] = json!([mount]),
            }
            let env = json!({ "name": "TEAL_MODEL_FILE", "value": MODEL_FILE });
            match container["env"].as_array_mut() {
                Some(vars) => vars.push(env),
                None => container["env"] = json!([env]),
            }
        }
    }
    match pod["initContainers"].as_array_mut() {
        Some(init) => init.push(fetch),
        None => pod["initContainers"] = json!([fetch]),
    }
    let volume = json!({ "name": VOLUME, "emptyDir": {} });
    match pod["volumes"].as_array_mut() {
        Some(volumes) => volumes.push(volume),
        None => pod["volumes"] = json!([volume]),
    }
    template["metadata"]["annotations"]["teal.dev/source"] = json!(source);
}

/// A Service selecting one colour's pods, as the operator applies it; public for the same
/// reason as [`deployment`].
pub fn service(md: &ModelDeployment, name: &str, colour: Colour, role: &str) -> serde_json::Value {
    let mut labels = labels(md, colour);
    labels["teal.dev/role"] = json!(role);
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace(md),
            "labels": labels,
            "ownerReferences": owner(md),
        },
        "spec": {
            "selector": selector(md, colour),
            "ports": [{ "name": "http", "port": md.spec.port, "targetPort": md.spec.port }],
        }
    })
}

/// The container securityContext of the `image` shortcut: what the Kubernetes "restricted"
/// Pod Security Standard asks for. The image must run as a non-root user.
pub fn restricted_security_context() -> serde_json::Value {
    json!({
        "runAsNonRoot": true,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// Whether teal made the object `meta` for `md`: it carries an owner reference to the
/// resource, or teal's labels naming it.
fn made_for(md: &ModelDeployment, meta: &ObjectMeta) -> bool {
    let owned = md.uid().is_some_and(|uid| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.kind == "ModelDeployment")
    });
    let labels = meta.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let labelled = label("app.kubernetes.io/managed-by") == Some("teal")
        && label("teal.dev/model-deployment") == Some(md.name_any().as_str());
    owned || labelled
}

/// Refuses ([`Error::NotOurs`]) when an object `name` exists that teal did not make for `md`;
/// an absent one is teal's to create. Reads only: nothing is written here.
async fn check_ours<K>(api: &Api<K>, md: &ModelDeployment, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    if made_for(md, existing.meta()) {
        return Ok(());
    }
    let kind = K::kind(&());
    let how = if kind == "Service" {
        "delete or rename it, or name another Service in spec.activeService or spec.previewService"
    } else {
        "delete or rename it, or rename this ModelDeployment (its Deployments are NAME-blue and NAME-green)"
    };
    Err(Error::NotOurs(format!(
        "{kind} {}/{name} exists and teal did not make it for this ModelDeployment (no owner reference to it, no teal labels naming it): teal adopts only its own objects and writes nothing to it; {how}",
        namespace(md)
    )))
}

/// Applies one colour's Deployment (server-side apply, so applying it again is harmless).
pub(super) async fn apply_deployment(
    md: &ModelDeployment,
    ctx: &Context,
    colour: Colour,
    replicas: i32,
) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace(md));
    let name = deployment_name(md, colour);
    check_ours(&api, md, &name).await?;
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(deployment(md, colour, replicas)),
    )
    .await?;
    Ok(())
}

/// Sets a colour's replica count, leaving the rest of its Deployment as it is.
pub(super) async fn scale(
    md: &ModelDeployment,
    ctx: &Context,
    colour: Colour,
    replicas: i32,
) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace(md));
    check_ours(&api, md, &deployment_name(md, colour)).await?;
    let patch = json!({ "spec": { "replicas": replicas } });
    match api
        .patch(
            &deployment_name(md, colour),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone is as good as scaled to zero.
        Err(kube::Error::Api(e)) if e.code == 404 && replicas == 0 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The colour Services (stable selectors), and in `service` mode the active Service on the
/// live colour and the preview Service on the candidate (or the live colour between
/// rollouts).
pub(super) async fn apply_services(
    md: &ModelDeployment,
    ctx: &Context,
    live: Colour,
    candidate: Option<Colour>,
    colours: bool,
) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace(md));
    let params = PatchParams::apply(MANAGER).force();
    let mut wanted = Vec::new();
    if md.spec.switch_mode == SwitchMode::Service {
        wanted.push(service(md, &active_service(md), live, "active"));
        if let Some(preview) = &md.spec.preview_service {
            wanted.push(service(md, preview, candidate.unwrap_or(live), "preview"));
        }
    }
    for colour in [Colour::Blue, Colour::Green]
        .into_iter()
        .filter(|_| colours)
    {
        wanted.push(service(md, &colour_service(md, colour), colour, "colour"));
    }
    let name = |object: &serde_json::Value| {
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // Every one is checked before any is written, so a refusal leaves them all as they were.
    for object in &wanted {
        check_ours(&api, md, &name(object)).await?;
    }
    for object in wanted {
        api.patch(&name(&object), &params, &Patch::Apply(object))
            .await?;
    }
    Ok(())
}
