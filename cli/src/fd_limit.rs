//! The file descriptors `serve` needs: one per connection the node may
//! hold, plus a reserve. Checked before listening, so that a node asked to
//! hold more connections than its process may open says so at once, rather
//! than failing to accept them later.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors a node needs besides one per connection it may hold: up to
/// 64 connections being answered 503 past the limit, the listening socket,
/// the runtime's own (epoll, wakers, timers), stdio, files read at start.
pub const RESERVED: u64 = 128;

/// What the process may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit: what the process may open now.
    pub soft: u64,
    /// The hard limit: what it may raise its soft limit to.
    pub hard: u64,
}

/// The descriptors a node holding `connections` (its listeners' limit plus
/// the peers it dials) needs.
pub fn needed(connections: usize) -> u64 {
    connections as u64 + RESERVED
}

/// The connections a node may hold within `fds` descriptors.
pub fn connections_within(fds: u64) -> usize {
    fds.saturating_sub(RESERVED) as usize
}

/// This process's limit now (an unlimited one reads as `u64::MAX`).
pub fn current() -> Limit {
    let limit = getrlimit(Resource::Nofile);
    Limit { soft: limit.current.unwrap_or(u64::MAX), hard: limit.maximum.unwrap_or(u64::MAX) }
}

/// Raises the soft limit to `need` if it is lower (never past the hard
/// limit, which only a privileged process may raise). Returns the limit in
/// force afterwards; the caller compares it with `need`.
pub fn raise_to(need: u64) -> std::io::Result<Limit> {
    let limit = current();
    if limit.soft >= need || limit.hard <= limit.soft {
        return Ok(limit);
    }
    let raised = Rlimit { current: Some(need.min(limit.hard)), maximum: getrlimit(Resource::Nofile).maximum };
    setrlimit(Resource::Nofile, raised)?;
    Ok(current())
}

/// The error `serve` reports when `--max-connections` needs more
/// descriptors than the hard limit allows.
pub fn too_low(max_connections: usize, dialed: usize, need: u64, hard: u64) -> String {
    let fits = connections_within(hard).saturating_sub(dialed);
    format!(
        "--max-connections {max_connections} needs {need} file descriptors, but this process may open at most \
         {hard} (its hard limit, RLIMIT_NOFILE). Raise the hard limit (`ulimit -Hn {need}` in a root shell, \
         LimitNOFILE={need} in a systemd unit, --ulimit nofile={need} for Docker) or lower --max-connections \
         to {fits}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_added_and_taken_back() {
        assert_eq!(needed(50_000), 50_128);
        assert_eq!(connections_within(needed(50_000)), 50_000);
        assert_eq!(connections_within(100), 0);
    }

    #[test]
    fn raising_never_lowers_nor_passes_the_hard_limit() {
        let before = current();
        let after = raise_to(before.soft.saturating_sub(1)).unwrap();
        assert_eq!(after, before, "a lower need changes nothing");
        let after = raise_to(u64::MAX).unwrap();
        assert_eq!(after.hard, before.hard);
        assert!(after.soft <= after.hard && after.soft >= before.soft);
    }

    #[test]
    fn the_error_names_the_numbers_and_the_ways_out() {
        let e = too_low(50_000, 0, 50_128, 20_000);
        assert!(e.starts_with("--max-connections 50000 needs 50128 file descriptors"), "{e}");
        assert!(e.contains("at most 20000 (its hard limit, RLIMIT_NOFILE)"), "{e}");
        assert!(e.contains("ulimit -Hn 50128") && e.contains("LimitNOFILE=50128"), "{e}");
        assert!(e.ends_with("lower --max-connections to 19872"), "{e}");
    }
}
