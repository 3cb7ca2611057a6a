//! What the core's benchmarks share: their command-line sizes and the
//! timing loop.

use std::time::Instant;

/// How much work a run does: `--n` items per repetition, `--reps`
/// repetitions.
pub struct Args {
    pub n: usize,
    pub reps: usize,
}

/// `--n` (default `default_n`) and `--reps` (default 5) from the command line.
pub fn args(default_n: usize) -> Args {
    let a: Vec<String> = std::env::args().collect();
    let get = |flag: &str, default: usize| {
        a.iter()
            .position(|x| x == flag)
            .and_then(|i| a.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Args { n: get("--n", default_n), reps: get("--reps", 5) }
}

/// Runs `f(n)` `reps` times after a warm-up of `n / 10`; returns ns per
/// item (median, min, max).
pub fn measure(n: usize, reps: usize, mut f: impl FnMut(usize)) -> (f64, f64, f64) {
    f(n / 10);
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f(n);
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}
