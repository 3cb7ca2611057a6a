//! The fuzz targets' checks (`core/fuzz/src/checks.rs`) over the checked-in
//! inputs: the hand-made seeds (`core/fuzz/seeds/`) and every input a
//! fuzzer found that once broke a check (`core/fuzz/regressions/`). A
//! failing file is named in the test's failure.

#[path = "../../core/fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use packetflow::Codec;

/// Every input file of `target`: seeds, then regressions, sorted by path.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else { continue };
        for entry in dir {
            let path = entry.expect("a readable directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("a readable input"))).collect()
}

/// Runs `check` on every input of `target`; fails naming each input that
/// broke it.
fn replay(target: &str, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no inputs for {target}: the seeds are missing");
    let failed: Vec<String> = inputs
        .iter()
        .filter(|(_, bytes)| std::panic::catch_unwind(|| check(bytes)).is_err())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs broke a check: {failed:#?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn decode_json_inputs() {
    replay("decode_json", |bytes| checks::decode(Codec::Json, bytes));
}

#[test]
fn decode_msgpack_inputs() {
    replay("decode_msgpack", |bytes| checks::decode(Codec::MsgPack, bytes));
}

#[test]
fn decode_batch_inputs() {
    replay("decode_batch", checks::batch);
}

#[test]
fn node_session_inputs() {
    replay("node_session", checks::node_session);
}
