//! Decodes the same documents many times and prints ns per document, for
//! the build it is (with or without `float_roundtrip`). See run.sh.

use std::hint::black_box;
use std::time::Instant;

/// A submit frame like those on the wire, its data `values` long.
fn frame(data: &str) -> String {
    format!(
        r#"{{"type":"submit","seq":7,"packet":{{"id":"0b5f2a44-7d1e-4c43-9f8e-2d4c1a9e6b10","group":"df","element":"transform","data":{data},"priority":5,"timeout_ms":30000}}}}"#
    )
}

fn documents() -> Vec<(&'static str, String)> {
    // Floats as a sensor or pricing service sends them: 17 significant digits.
    let floats: Vec<String> = (0..1000).map(|i| format!("{:.17e}", (i as f64 + 0.1) * 1.000_000_1)).collect();
    // And as most hand-written data has them: a few decimals.
    let short: Vec<String> = (0..1000).map(|i| format!("{:.3}", i as f64 * 0.37)).collect();
    let ints: Vec<String> = (0..1000).map(|i| (i * 7919).to_string()).collect();
    vec![
        ("short string", frame(r#""hello world""#)),
        ("one float (0.1)", frame("0.1")),
        ("1,000 floats, 17 digits", frame(&format!("[{}]", floats.join(",")))),
        ("1,000 floats, 3 decimals", frame(&format!("[{}]", short.join(",")))),
        ("1,000 integers", frame(&format!("[{}]", ints.join(",")))),
    ]
}

fn main() {
    let rounds: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let build = if cfg!(feature = "roundtrip") { "float_roundtrip" } else { "default" };
    for (name, doc) in documents() {
        // About 50 ms of work per round, whatever the document's size.
        let n = (50_000_000 / doc.len()).max(100) as u32;
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..n {
                let v: serde_json::Value = serde_json::from_str(black_box(&doc)).unwrap();
                black_box(v);
            }
            best = best.min(start.elapsed().as_nanos() as f64 / f64::from(n));
        }
        println!("{{\"build\":\"{build}\",\"document\":\"{name}\",\"bytes\":{},\"ns\":{best:.0}}}", doc.len());
    }
}
