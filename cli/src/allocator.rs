//! The allocator `packetflow` runs with, and its settings.
//!
//! mimalloc: the hub allocates per packet, and does it measurably cheaper
//! with mimalloc than with the system allocator (BENCHMARKS.md). Without
//! transparent huge pages (the crate's `no_thp` feature): a node's few MiB
//! of heap would otherwise be touched 2 MiB at a time ("Peak RSS").
//!
//! Purge delay 10 ms: pages freed go back to the OS in batches, within
//! about 10 ms. mimalloc's default (1 s) gives them back only when it next
//! allocates once the delay is over, so a node that went quiet after many
//! clients left kept what they had cost: 10,000 idle connections closed left
//! 91 MiB resident instead of 9. A delay of 0 returned each page as it was
//! freed: one `madvise` per page under load (5,000 in 1.5 s of pipelined
//! traffic, against 84 with 10 ms), 7-10% more CPU per packet at 8x100.
//!
//! A collection every second ([`trim_every`]): mimalloc keeps the last
//! empty page of each size class for a while (16 rounds of its own
//! collection, which only allocating drives), so a node that went idle
//! kept up to 64 KiB per size class it had used. With both, a node's RSS
//! after 10,000 or 19,000 clients left is 1.15-1.16x what it was before they
//! came (BENCHMARKS.md, "Idle connections", where every setting tried is
//! compared).

use std::time::Duration;

use libmimalloc_sys::{mi_collect, mi_option_set, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the crate does
/// not name it for mimalloc 3; the test below checks it is the right one).
const PURGE_DELAY: mi_option_t = 15;

/// The purge delay `serve` runs with (see above).
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// The environment variable by which mimalloc's purge delay may still be
/// set (in ms), which then wins over this crate's choice.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Applies the settings above. Call first thing in `main`, before any other
/// thread runs (mimalloc's options are not meant to change under them).
pub fn configure() {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: sets one of mimalloc's option values; no other thread
        // allocates yet (see above).
        unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Every `period`, gives back to the OS the pages the allocator no longer
/// uses on the thread this runs on: all of `serve`'s on its default
/// single-threaded runtime (with worker threads, the worker that runs it).
pub async fn trim_every(period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // SAFETY: collects the calling thread's heap; nothing else is touched.
        unsafe { mi_collect(true) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mimalloc's purge delay now, in ms.
    fn purge_delay_ms() -> i64 {
        // SAFETY: reads one of mimalloc's option values.
        unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) as i64 }
    }

    #[test]
    fn the_purge_delay_option_is_mimallocs_and_configure_sets_it() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            return; // set by hand: the default cannot be seen
        }
        // Only mimalloc 3's purge delay defaults to 1000 ms.
        assert_eq!(purge_delay_ms(), 1000, "option {PURGE_DELAY} is not mimalloc's purge delay");
        configure();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS as i64);
    }
}
