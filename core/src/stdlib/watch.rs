//! `ed:watch`: calls a step whenever an `rm:cache` key changes.
//!
//! A watch is kept by the key's owner, beside the key's entry (see
//! [`cache`](super::cache)): every change of the key is made there,
//! wherever in the mesh it was asked, so the owner tells every watch. The
//! owner calls each watch's step as a new packet without waiting for it
//! (a failing step is counted in [`CacheStats`](super::cache::CacheStats)
//! and never fails the change). Watches live in the owner's memory: they
//! do not survive its restart, nor move when the key's owner changes.
//!
//! A watch id is `<uuid>:<key>`, so that a cancel finds the key's owner.

use std::sync::Arc;

use serde_json::{json, Value};

use super::args::Args;
use super::cache::{node_cache, on_owner, owned_here, NodeCache, Watch, MAX_KEY_LEN};
use super::step::Step;
use crate::error::{ErrorCode, PfError};
use crate::packet::PacketId;
use crate::reactor::Handler;

const ELEMENT: &str = "ed:watch";
/// The length of the uuid that starts a watch id.
const UUID_LEN: usize = 36;
/// Longest watch id: a uuid, `:` and a key.
const MAX_WATCH_ID_LEN: usize = UUID_LEN + 1 + MAX_KEY_LEN;

/// The key of the watch `id` (`<uuid>:<key>`), if it is one.
fn key_of(id: &str) -> Option<&str> {
    let (uuid, key) = id.split_once(':')?;
    let uuid_like = uuid.len() == UUID_LEN && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    (uuid_like && !key.is_empty()).then_some(key)
}

/// `ed:watch` `{key, do}` -> `{watch_id}`: from now on, every change of
/// the `rm:cache` key `key` (a set, a delete, an expiry, an eviction)
/// calls `do` with `{key, value, revision, change}` (`value` null when the
/// key is gone; `change`: `set`, `del`, `expire` or `evict`), unless the
/// step has data of its own. `{cancel: watch_id}` -> `{cancelled}` (false:
/// no such watch).
pub(super) fn watch() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of(ELEMENT, &data)?;
        if args.get("cancel").is_some() {
            let id = args.text("cancel", MAX_WATCH_ID_LEN)?;
            if let Some(other) = ["key", "do"].into_iter().find(|f| args.get(f).is_some()) {
                return Err(args.bad("cancel", format!("is given alone (with no {other})")));
            }
            let key = key_of(id).ok_or_else(|| {
                args.bad("cancel", format!("must be a watch_id as ed:watch answered it, got {id:?}"))
            })?;
            if owned_here(&ctx.reactor, key) {
                return Ok(json!({"cancelled": node_cache(&ctx.reactor).unwatch(key, id)}));
            }
            return on_owner(&ctx, key, json!({"type": "unwatch", "id": id})).await;
        }
        let key = args.text("key", MAX_KEY_LEN)?;
        let step = args.step("do")?;
        let id = format!("{}:{key}", PacketId::random());
        if owned_here(&ctx.reactor, key) {
            node_cache(&ctx.reactor).watch(key, Watch { id: id.clone(), step })?;
        } else {
            on_owner(&ctx, key, json!({"type": "watch", "id": id, "do": step.to_value()})).await?;
        }
        Ok(json!({"watch_id": id}))
    })
}

/// A `watch` or `unwatch` of `key` routed to its owner (a `pf.cache`
/// turn there): `{watch_id}` or `{cancelled}`.
pub(super) fn serve_routed(cache: &Arc<NodeCache>, message: &Value, key: &str) -> Result<Value, PfError> {
    let id = match message.get("id").and_then(Value::as_str).filter(|id| key_of(id) == Some(key)) {
        Some(id) => id,
        None => {
            return Err(PfError::new(
                ErrorCode::BadRequest,
                format!("{ELEMENT}: id must be a watch id <uuid>:<key> of this key, got {}", message["id"]),
            ))
        }
    };
    if message["type"] == "unwatch" {
        return Ok(json!({"cancelled": cache.unwatch(key, id)}));
    }
    let step = Step::parse(&message["do"], format_args!("{ELEMENT}: do"))?;
    cache.watch(key, Watch { id: id.to_owned(), step })?;
    Ok(json!({"watch_id": id}))
}
