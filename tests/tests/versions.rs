//! The release version has one source, `[workspace.package] version` in the
//! root Cargo.toml (`scripts/version.sh set` writes it everywhere): the
//! packages users install must all carry that same version.

use std::path::{Path, PathBuf};

/// The workspace's version, which this crate inherits.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The value of the first line `<prefix>"<value>"<suffix>` in `text`.
fn quoted_after<'a>(text: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        line.strip_prefix(prefix)?.strip_suffix(suffix)?.strip_prefix('"')?.strip_suffix('"')
    })
}

#[test]
fn the_workspace_version_is_the_one_in_the_root_manifest() {
    let manifest = read("Cargo.toml");
    let table = manifest.split("[workspace.package]").nth(1).expect("[workspace.package] in Cargo.toml");
    let table = table.split("\n[").next().unwrap_or(table);
    assert_eq!(quoted_after(table, "version = ", ""), Some(VERSION));
}

#[test]
fn every_crate_inherits_the_workspace_version() {
    for crate_dir in
        ["core", "cli", "bindings-python", "bindings-node", "bindings-elixir/native/packetflow_nif"]
    {
        let manifest = read(&format!("{crate_dir}/Cargo.toml"));
        assert!(
            manifest.lines().any(|l| l.trim() == "version.workspace = true"),
            "{crate_dir}/Cargo.toml must inherit the workspace version (version.workspace = true)"
        );
    }
}

#[test]
fn the_python_package_takes_its_version_from_cargo() {
    // maturin gives a package with a dynamic version the crate's version.
    let pyproject = read("bindings-python/pyproject.toml");
    assert!(
        pyproject.lines().any(|l| l.trim() == r#"dynamic = ["version"]"#),
        "pyproject.toml must declare dynamic = [\"version\"]"
    );
    let project = pyproject.split("[project]").nth(1).expect("[project] in pyproject.toml");
    let project = project.split("\n[").next().unwrap_or(project);
    assert!(
        !project.lines().any(|l| l.trim_start().starts_with("version")),
        "pyproject.toml must not spell out a version of its own"
    );
}

#[test]
fn the_npm_package_has_the_workspace_version() {
    let package: serde_json::Value =
        serde_json::from_str(&read("bindings-node/package.json")).expect("package.json is JSON");
    assert_eq!(package["version"].as_str(), Some(VERSION), "bindings-node/package.json");
}

#[test]
fn the_elixir_package_has_the_workspace_version() {
    let mix = read("bindings-elixir/mix.exs");
    assert_eq!(quoted_after(&mix, "  @version ", ""), Some(VERSION), "bindings-elixir/mix.exs @version");
    assert!(mix.contains("version: @version"), "mix.exs must use @version as the project's version");
}
