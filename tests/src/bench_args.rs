//! The command line of the benchmarks in `tests/benches`: sizes, and
//! `--only`, which runs one of a benchmark's two sides alone (for
//! `valgrind --tool=callgrind`, whose totals are then compared).

/// The number given as `--NAME N`, or `default`.
pub fn number(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    let given = argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1));
    given.map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number, got {v:?}")))
}

/// Which of the two sides to run, `(first, second)`: both without
/// `--only`, else the one it names.
pub fn only(first: &str, second: &str) -> (bool, bool) {
    let argv: Vec<String> = std::env::args().collect();
    match argv.iter().position(|a| a == "--only").and_then(|i| argv.get(i + 1)) {
        None => (true, true),
        Some(side) if side == first => (true, false),
        Some(side) if side == second => (false, true),
        Some(other) => panic!("--only takes {first} or {second}, got {other:?}"),
    }
}
