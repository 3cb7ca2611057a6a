#!/usr/bin/env python3
"""Writes a binding crate out of the Cargo workspace, so that a package can
build it from source with nothing but cargo.

In the repository a binding crate (say bindings-node) is a workspace member:
it inherits its version, edition and dependency versions from the root
Cargo.toml and depends on the core crate in core/, outside the package. The
npm package's fallback source build needs a crate that stands alone:

  OUT/src/, OUT/build.rs       the member's own sources, copied
  OUT/native/packetflow_core/  the core crate as `cargo package` makes it
                               (its shipped files, a manifest with every
                               workspace value written out)
  OUT/Cargo.toml               the member's manifest with the workspace
                               values written out, `packetflow` pointing at
                               the vendored core, the root's [profile.*]
                               tables and an empty [workspace] table (cargo
                               must not look in the directories above)
  OUT/Cargo.lock               the repository's Cargo.lock trimmed by cargo
                               to the crates this one uses: every version in
                               it is one the repository builds with, and the
                               package builds with `cargo build --locked`

    scripts/standalone_crate.py MEMBER_DIR OUT

The library's name carries the version (packetflow_node_0_1_0): a cdylib's
file name has no hash in it, so in a CARGO_TARGET_DIR shared with the
repository's build two crates named alike would overwrite each other's
library. The Elixir package's NIF crate is written out the same way by
`mix packetflow.publish` (bindings-elixir/mix/packetflow_publish.exs).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

CORE_DIR = "native/packetflow_core"
# What `cargo package` adds for its own bookkeeping: the lock file of the
# package (OUT/Cargo.lock) pins the versions instead.
CARGO_BOOKKEEPING = (".cargo_vcs_info.json", "Cargo.lock", "Cargo.toml.orig")


def cargo(args: list[str], cwd: Path) -> str:
    """Runs cargo offline first (the repository's build has fetched every
    crate), then online; exits with cargo's output when both fail."""
    for extra in (["--offline"], []):
        done = subprocess.run(["cargo", *args, *extra], cwd=cwd, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout
    sys.exit(f"cargo {' '.join(args)} failed:\n{done.stderr}")


def vendor_core(repo: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="packetflow-core-") as work:
        cargo(["package", "-p", "packetflow", "--no-verify", "--allow-dirty", "--target-dir", work], repo)
        crates = list(Path(work, "package").glob("packetflow-*.crate"))
        if len(crates) != 1:
            sys.exit(f"cargo package left {len(crates)} packetflow crates in {work}")
        unpacked = Path(work, "unpacked")
        with tarfile.open(crates[0]) as tar:
            # The "data" filter (Python 3.11.4+) refuses links out of the tree.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(unpacked, filter="data")
            else:
                tar.extractall(unpacked)
        (top,) = unpacked.iterdir()
        for name in CARGO_BOOKKEEPING:
            (top / name).unlink(missing_ok=True)
        target = out / CORE_DIR
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(top), target)


def resolve_dependency(name: str, spec: object, workspace_deps: dict) -> dict:
    """A dependency entry with `workspace = true` written out."""
    if isinstance(spec, str):
        return {"version": spec}
    spec = dict(spec)
    if not spec.pop("workspace", False):
        return spec
    if name == "packetflow":
        base: dict = {"path": CORE_DIR}
    else:
        inherited = workspace_deps.get(name)
        if inherited is None:
            sys.exit(f"{name} inherits from [workspace.dependencies], which does not define it")
        base = {"version": inherited} if isinstance(inherited, str) else dict(inherited)
        base.pop("path", None)
    features = list(base.get("features", []))
    features += [f for f in spec.pop("features", []) if f not in features]
    base.update(spec)
    if features:
        base["features"] = features
    return base


def standalone_manifest(member: dict, root: dict) -> dict:
    workspace = root.get("workspace", {})
    package = {}
    for key, value in member["package"].items():
        if isinstance(value, dict) and value.get("workspace") is True:
            if key not in workspace.get("package", {}):
                sys.exit(f"package.{key} inherits from [workspace.package], which does not define it")
            value = workspace["package"][key]
        package[key] = value
    version_suffix = re.sub(r"[^A-Za-z0-9]", "_", package["version"])
    lib = dict(member.get("lib", {}))
    lib["name"] = f"{package['name'].replace('-', '_')}_{version_suffix}"
    manifest = {"package": package, "lib": lib}
    # Dev-dependencies are left out: the package builds the library only.
    for table in ("dependencies", "build-dependencies"):
        if table in member:
            manifest[table] = {
                name: resolve_dependency(name, spec, workspace.get("dependencies", {}))
                for name, spec in member[table].items()
            }
    if "profile" in root:
        manifest["profile"] = root["profile"]
    return manifest


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def render(manifest: dict) -> str:
    lines = [
        "# Written by scripts/standalone_crate.py from the repository's workspace:",
        "# a crate of its own, depending on the core crate vendored beside it.",
    ]
    for table, entries in manifest.items():
        if table == "profile":
            for profile, settings in entries.items():
                lines += ["", f"[profile.{toml_key(profile)}]"]
                lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in settings.items()]
            continue
        lines += ["", f"[{table}]"]
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in entries.items()]
    lines += ["", "# Cargo must not look for a workspace in the directories above.", "[workspace]", ""]
    return "\n".join(lines)


def lock_entries(text: str) -> set[tuple[str, str]]:
    return set(re.findall(r'^name = "([^"]+)"\nversion = "([^"]+)"', text, re.M))


def write_lockfile(repo: Path, out: Path) -> None:
    repo_lock = (repo / "Cargo.lock").read_text()
    lock = out / "Cargo.lock"
    lock.write_text(repo_lock)
    # Cargo drops the entries this crate does not use and keeps every other
    # version as it was (--locked would refuse: dropping is a change).
    cargo(["metadata", "--format-version", "1", "--manifest-path", str(out / "Cargo.toml")], out)
    new = lock_entries(lock.read_text()) - lock_entries(repo_lock)
    if new:
        listed = ", ".join(f"{n} {v}" for n, v in sorted(new))
        sys.exit(f"the standalone Cargo.lock has versions the repository's lock does not: {listed}")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: scripts/standalone_crate.py MEMBER_DIR OUT")
    repo = Path(__file__).resolve().parent.parent
    member_dir, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    root = tomllib.loads((repo / "Cargo.toml").read_text())
    member = tomllib.loads((member_dir / "Cargo.toml").read_text())
    out.mkdir(parents=True, exist_ok=True)
    if (out / CORE_DIR).exists():
        shutil.rmtree(out / CORE_DIR)
    vendor_core(repo, out)
    # The crate's own sources, beside its manifest as in the repository.
    shutil.copytree(member_dir / "src", out / "src", dirs_exist_ok=True)
    if (member_dir / "build.rs").exists():
        shutil.copy2(member_dir / "build.rs", out / "build.rs")
    (out / "Cargo.toml").write_text(render(standalone_manifest(member, root)))
    write_lockfile(repo, out)


if __name__ == "__main__":
    main()
