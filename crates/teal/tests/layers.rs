//! The layers of both crates, checked: a module may name (by a `crate::` path, or a `super::`
//! path that climbs out of its own top module) only its own top module or one on a lower
//! layer. Modules on the same layer are side by side and do not use each other. ARCHITECTURE.md
//! draws the same order; a new top module must be given a layer here before it can land.

use std::collections::BTreeMap;
use std::path::Path;

/// `crates/teal/src`, lowest first.
const TEAL: &[(&str, u32)] = &[
    ("headers", 1),
    ("metrics", 1),
    ("log_throttle", 1),
    ("trace", 2),
    ("state", 3),
    ("backends", 4),
    ("routing", 5),
    ("control", 6),
    ("gateway", 7),
    ("admin", 7),
    ("kubernetes", 7),
    ("server", 8),
    ("cli", 9),
];

/// `crates/teal-core/src`, lowest first.
const CORE: &[(&str, u32)] = &[
    ("routing", 1),
    ("stats", 1),
    ("protocol", 1),
    ("envelope", 1),
    ("http1", 1),
    ("source", 1),
    ("gates", 2),
    ("rollout", 3),
    ("config", 4),
];

/// Every source file under `root`, as (module path, text). `lib.rs` and `main.rs` are the
/// crate root, which may name every module.
fn sources(root: &Path) -> BTreeMap<Vec<String>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("the source folder is readable") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(root).expect("under the root");
            let mut module: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            out.insert(module, text);
        }
    }
    out
}

/// The text without comments, so that prose naming a module is not an import.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The first identifier of `rest`, or each top-level one when it opens a `{...}` group.
fn heads(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0usize;
        let mut names = Vec::new();
        let mut start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                    let end = group[i..]
                        .bytes()
                        .position(|b| !is_ident(b))
                        .map_or(group.len(), |n| i + n);
                    names.push(group[i..end].to_string());
                    start = false;
                }
                _ => {}
            }
        }
        return names;
    }
    let end = rest
        .bytes()
        .position(|b| !is_ident(b))
        .unwrap_or(rest.len());
    vec![rest[..end].to_string()]
}

/// The top modules a file's code names outside its own top module.
fn references(module: &[String], text: &str) -> Vec<String> {
    let code = code_only(text);
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b'$') {
            continue;
        }
        found.extend(heads(&code[i + "crate::".len()..]));
    }
    // `super::` chains: each climbs one module; one that climbs past the top module names a
    // module at the crate root.
    for (i, _) in code.match_indices("super::") {
        if i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':') {
            continue;
        }
        let mut rest = &code[i..];
        let mut climbs = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = after;
        }
        // A file's own module is `module`; `super` is its parent.
        let parent_depth = module.len() as i64 - climbs;
        if parent_depth == 0 {
            found.extend(heads(rest));
        }
    }
    found.retain(|name| name != "self" && name != &module[0] && !name.is_empty());
    found
}

/// Every reference that breaks the order, as "file names module" lines.
fn violations(layers: &[(&str, u32)], files: &BTreeMap<Vec<String>, String>) -> Vec<String> {
    let layer = |name: &str| layers.iter().find(|(n, _)| *n == name).map(|(_, l)| *l);
    let mut out = Vec::new();
    for (module, text) in files {
        let Some(own) = layer(&module[0]) else {
            out.push(format!(
                "{} is not in the layer table; give it a layer in tests/layers.rs and ARCHITECTURE.md",
                module.join("::")
            ));
            continue;
        };
        for name in references(module, text) {
            match layer(&name) {
                Some(theirs) if theirs < own => {}
                Some(theirs) => out.push(format!(
                    "{} (layer {own}) uses {name} (layer {theirs}): a module may only use lower layers",
                    module.join("::")
                )),
                None => {}
            }
        }
    }
    out
}

fn crate_src(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

#[test]
fn the_binary_crate_uses_only_lower_layers() {
    let found = violations(TEAL, &sources(&crate_src("teal")));
    assert!(found.is_empty(), "layer violations:\n{}", found.join("\n"));
}

#[test]
fn the_core_crate_uses_only_lower_layers() {
    let found = violations(CORE, &sources(&crate_src("teal-core")));
    assert!(found.is_empty(), "layer violations:\n{}", found.join("\n"));
}

fn one_file(module: &[&str], text: &str) -> BTreeMap<Vec<String>, String> {
    BTreeMap::from([(
        module.iter().map(|m| m.to_string()).collect(),
        text.to_string(),
    )])
}

#[test]
fn an_import_from_a_higher_layer_is_caught() {
    let files = one_file(
        &["routing"],
        "use crate::metrics::SlotHandles;\nuse crate::control::rollout::Rollouts;\n",
    );
    assert_eq!(
        violations(TEAL, &files),
        vec!["routing (layer 5) uses control (layer 6): a module may only use lower layers"]
    );
}

#[test]
fn grouped_inline_and_super_paths_are_read_and_comments_are_not() {
    let files = one_file(
        &["backends", "upstream"],
        "// crate::cli is only named in prose\nuse crate::{state::store::Store, gateway::Answer};\n\
         fn f() { let _ = super::super::admin::router; let _ = super::onnx::OnnxModel::load; }\n",
    );
    assert_eq!(
        violations(TEAL, &files),
        vec![
            "backends::upstream (layer 4) uses gateway (layer 7): a module may only use lower layers",
            "backends::upstream (layer 4) uses admin (layer 7): a module may only use lower layers",
        ]
    );
}

#[test]
fn siblings_on_one_layer_do_not_use_each_other() {
    let files = one_file(&["admin", "status"], "use crate::gateway::Answer;\n");
    assert_eq!(violations(TEAL, &files).len(), 1);
}

#[test]
fn a_module_without_a_layer_is_refused() {
    let files = one_file(&["helpers"], "");
    assert_eq!(violations(TEAL, &files).len(), 1);
}
