//! Tidy checks over the whole tree, run as ordinary tests by `cargo xtask test`.
//!
//! They keep the promises of ARCHITECTURE.md from eroding one commit at a time: every module
//! says what it is for, no test is switched off, every member takes its dependencies and lints
//! from the workspace, and the crate boundaries ("`devices` knows nothing of recipes", "the HMI
//! talks only D-Bus") hold in the `Cargo.toml` files, where they are cheapest to enforce.

use std::path::{Path, PathBuf};

use crate::workspace_root;

/// Crates that a member must never depend on (normal or build dependencies), and why.
/// Test-only dev-dependencies are exempt: a test may wire two sides together.
const FORBIDDEN_DEPENDENCIES: &[(&str, &[&str], &str)] = &[
    (
        "galen-devices",
        &[
            "galen-appliance",
            "galen-recipes",
            "galen-hil",
            "galen-hmi",
            "rusqlite",
            "zbus",
            "slint",
            "tss-esapi",
        ],
        "devices knows nothing of batches, recipes, records or D-Bus",
    ),
    (
        "galen-recipes",
        &[
            "galen-appliance",
            "galen-devices",
            "galen-hil",
            "galen-hmi",
            "rusqlite",
            "zbus",
            "slint",
            "tss-esapi",
            "tokio-serial",
            "tokio-modbus",
        ],
        "recipes knows nothing of hardware, records, the TPM or D-Bus",
    ),
    (
        "galen-hil",
        &[
            "galen-appliance",
            "galen-recipes",
            "galen-hmi",
            "rusqlite",
            "zbus",
            "slint",
            "tss-esapi",
        ],
        "the simulated unit stands in for hardware only; it knows nothing of the supervisor",
    ),
    (
        "galen-record",
        &[
            "galen-appliance",
            "galen-devices",
            "galen-hil",
            "galen-hmi",
            "galen-recipes",
            "rusqlite",
            "tss-esapi",
            "zbus",
            "slint",
            "tokio",
        ],
        "galen-verify must build anywhere an inspector is: no TPM stack, D-Bus, GUI or database",
    ),
    (
        "galen-hmi",
        &[
            "galen-appliance",
            "galen-devices",
            "galen-hil",
            "galen-recipes",
            "rusqlite",
            "tss-esapi",
            "tokio-serial",
            "tokio-modbus",
        ],
        "the HMI reaches the unit only through D-Bus",
    ),
];

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
        })
        .map(|p| relative(&p))
        .collect();
    assert!(
        offenders.is_empty(),
        "these files must start with a `//!` line saying what the module is for:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn no_test_is_switched_off() {
    // Built from pieces so that this file does not match itself.
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let mut offenders = Vec::new();
    for path in rust_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if banned.iter().any(|b| line.trim_start().starts_with(b)) {
                offenders.push(format!("{}:{}: {}", relative(&path), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "tests are never ignored and never pass by panicking; assert the error instead:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn members_take_dependencies_and_lints_from_the_workspace() {
    let mut problems = Vec::new();
    for (dir, manifest) in members() {
        let name = package_name(&manifest);
        if manifest.get("lints").and_then(|l| l.get("workspace")).and_then(toml::Value::as_bool)
            != Some(true)
        {
            problems.push(format!("{name}: needs `[lints] workspace = true`"));
        }
        for key in ["edition", "rust-version", "version"] {
            let inherited = manifest["package"]
                .get(key)
                .and_then(|v| v.get("workspace"))
                .and_then(toml::Value::as_bool);
            if inherited != Some(true) {
                problems.push(format!("{name}: needs `{key}.workspace = true`"));
            }
        }
        for (section, dep, spec) in dependencies(&manifest) {
            let from_workspace =
                spec.get("workspace").and_then(toml::Value::as_bool).unwrap_or(false);
            if !from_workspace {
                problems.push(format!(
                    "{}: [{section}] {dep} must be declared once in the root \
                     [workspace.dependencies] and used as `{dep}.workspace = true`",
                    dir.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn crate_boundaries_hold() {
    let mut problems = Vec::new();
    for (_, manifest) in members() {
        let name = package_name(&manifest);
        let Some((_, forbidden, why)) = FORBIDDEN_DEPENDENCIES.iter().find(|(n, ..)| *n == name)
        else {
            continue;
        };
        for (section, dep, _) in dependencies(&manifest) {
            if section != "dev-dependencies" && forbidden.contains(&dep.as_str()) {
                problems.push(format!("{name} depends on {dep} ({section}), but {why}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_guarded_crate_is_a_member() {
    let names: Vec<String> = members().iter().map(|(_, m)| package_name(m)).collect();
    for (guarded, ..) in FORBIDDEN_DEPENDENCIES {
        assert!(names.iter().any(|n| n == guarded), "{guarded} is not a workspace member");
    }
}

fn members() -> Vec<(PathBuf, toml::Table)> {
    let root = workspace_root();
    let manifest = read_toml(&root.join("Cargo.toml"));
    manifest["workspace"]["members"]
        .as_array()
        .expect("workspace.members is a list")
        .iter()
        .map(|m| {
            let dir = PathBuf::from(m.as_str().expect("member is a path"));
            let manifest = read_toml(&root.join(&dir).join("Cargo.toml"));
            (dir, manifest)
        })
        .collect()
}

fn package_name(manifest: &toml::Table) -> String {
    manifest["package"]["name"].as_str().expect("package.name").to_owned()
}

/// `(section, name, spec)` for every dependency of a manifest, target-specific ones included.
fn dependencies(manifest: &toml::Table) -> Vec<(String, String, toml::Value)> {
    let sections = ["dependencies", "dev-dependencies", "build-dependencies"];
    let mut tables: Vec<&toml::Table> = vec![manifest];
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        tables.extend(targets.values().filter_map(toml::Value::as_table));
    }
    let mut out = Vec::new();
    for table in tables {
        for section in sections {
            if let Some(deps) = table.get(section).and_then(toml::Value::as_table) {
                for (name, spec) in deps {
                    out.push((section.to_owned(), name.clone(), spec.clone()));
                }
            }
        }
    }
    out
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file in the repository, skipping build output and fuzzing state.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                let skip = name.starts_with('.')
                    || matches!(name.as_ref(), "target" | "corpus" | "artifacts" | "out");
                if !skip {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&workspace_root(), &mut out);
    out.sort();
    assert!(!out.is_empty(), "found no Rust files; is the workspace root right?");
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string()
}
