//! The layering of `src/`, checked from the code: every top-level module sits on a layer, and a
//! module may name (`crate::<module>`) only modules on lower layers. So no module imports one above
//! it, and no import cycle spans modules. docs/architecture.md draws the same layers.
//!
//! Test code (a file's `#[cfg(test)]` part) is left out: a unit test may borrow a fixture from
//! anywhere. A named exception would be a step of a restructuring not taken yet; the test fails
//! when one is no longer needed, so the list only shrinks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first. Modules on one layer do not name each other.
const LAYERS: &[&[&str]] = &[
    // Names, kinds, rules, schedule times, the user-facing error: nothing of dyngate.
    &["core"],
    // Where the backing PostgreSQL is; statement text; HTTP to other services.
    &["backend", "sql", "http_client"],
    // The catalog; the bundled PostgreSQL; the PostgreSQL protocol front end, which hands
    // dyngate's statements to a trait (wire::statements) that a layer above implements.
    &["catalog", "local_postgres", "wire"],
    // What refreshes tables; what fires FULL tables' refreshes.
    &["engine", "scheduler"],
    // The operations.
    &["manager"],
    // dyngate's own statements (the wire layer's trait); the HTTP side listener.
    &["handler", "http"],
    // Flags, environment and file.
    &["config"],
    // Starts and stops everything.
    &["server"],
];

/// Imports across layers not yet removed: (from module, to module, why). Empty: the layering
/// holds everywhere; an entry is a step of a restructuring not taken yet.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of src/ belongs to (None: the crate root, lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

/// The modules a text names as `crate::<module>`, with the line of each.
fn named_modules(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push((name, n + 1));
            }
            rest = after;
        }
    }
    out
}

/// A file without its test part (from the first `#[cfg(test)]` on: test modules end the files).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

#[test]
fn every_module_imports_only_from_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        modules.insert(module.clone());
        let Some(own) = layer_of(&module) else {
            violations.push(format!("{}: module `{module}` is on no layer (add it to LAYERS)", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (target, line) in named_modules(without_tests(&text)) {
            if target == module {
                continue;
            }
            let Some(theirs) = layer_of(&target) else {
                violations.push(format!("{}:{line}: `crate::{target}` is on no layer", file.display()));
                continue;
            };
            if theirs < own {
                continue;
            }
            if let Some(e) = EXCEPTIONS.iter().find(|(from, to, _)| *from == module && *to == target) {
                used_exceptions.insert((e.0, e.1));
                continue;
            }
            let how = if theirs == own { "on its own layer" } else { "on a layer above" };
            violations.push(format!("{}:{line}: `{module}` names `crate::{target}`, {how}", file.display()));
        }
    }
    assert!(violations.is_empty(), "imports against the layering:\n{}", violations.join("\n"));
    for (from, to, why) in EXCEPTIONS {
        assert!(
            used_exceptions.contains(&(*from, *to)),
            "the exception {from} -> {to} ({why}) is no longer needed: remove it from EXCEPTIONS"
        );
    }
    let unused: Vec<&&str> = LAYERS.iter().flat_map(|l| l.iter()).filter(|m| !modules.contains(**m)).collect();
    assert!(unused.is_empty(), "LAYERS names modules that src/ does not have: {unused:?}");
}

#[test]
fn the_checker_sees_what_it_checks() {
    let text = "use crate::core::Error;\nfn f() { crate::engine::x(); } // crate::wire in a comment\n#[cfg(test)]\nuse crate::server;";
    let named: Vec<String> = named_modules(without_tests(text)).into_iter().map(|(m, _)| m).collect();
    assert_eq!(named, ["core", "engine"]);
    let src = Path::new("/x/src");
    assert_eq!(module_of(src, Path::new("/x/src/engine/flink/mod.rs")).as_deref(), Some("engine"));
    assert_eq!(module_of(src, Path::new("/x/src/config.rs")).as_deref(), Some("config"));
    assert_eq!(module_of(src, Path::new("/x/src/lib.rs")), None);
    assert!(layer_of("core") < layer_of("engine") && layer_of("engine") < layer_of("manager"));
}
