//! `co`: collective calls. `gather` and `vote` run all their calls at
//! once; `gather` cancels what it no longer needs.

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};

use super::args::{error_value, Args, MAX_ITEMS};
use crate::error::{ErrorCode, PfError};
use crate::reactor::Handler;

/// `co:gather` `{calls, min?}`: runs every call at once; once `min` of
/// them succeeded (default: all), the rest are cancelled -> the results
/// in input order, each `{"ok": true, "value"}`, `{"ok": false, "error":
/// {code, message}}` or `{"ok": false, "cancelled": true}`. When so many
/// failed that `min` cannot be reached: PF424 naming them.
pub(super) fn gather() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("co:gather", &data)?;
        let calls = args.steps("calls")?;
        let min = args.int_in("min", 1, MAX_ITEMS)?.map_or(calls.len(), |m| m as usize);
        if min > calls.len() {
            return Err(
                args.bad("min", format!("must be at most the number of calls ({}), got {min}", calls.len()))
            );
        }
        let mut results: Vec<Option<Value>> = vec![None; calls.len()];
        let (mut succeeded, mut failed) = (0, Vec::new());
        {
            let mut running: FuturesUnordered<_> = calls
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let ctx = &ctx;
                    async move { (i, step.run(ctx, Value::Null).await) }
                })
                .collect();
            while succeeded < min {
                let Some((i, answer)) = running.next().await else { break };
                results[i] = Some(match answer {
                    Ok(value) => {
                        succeeded += 1;
                        json!({"ok": true, "value": value})
                    }
                    Err(e) => {
                        failed.push(format!("calls[{i}] {}: {}", e.code, e.message));
                        json!({"ok": false, "error": error_value(&e)})
                    }
                });
                if calls.len() - failed.len() < min {
                    let why = format!(
                        "co:gather: {} of {} calls failed, so {min} cannot succeed: {}",
                        failed.len(),
                        calls.len(),
                        failed.join("; ")
                    );
                    return Err(PfError::new(ErrorCode::DependencyFailed, why));
                }
            }
            // Dropping the calls still running cancels them.
        }
        let results: Vec<Value> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| json!({"ok": false, "cancelled": true})))
            .collect();
        Ok(Value::Array(results))
    })
}

/// `co:vote` `{voters, quorum?}`: runs every voter at once, with the same
/// `input` (default `null`); the answer given by at least `quorum` voters
/// (`"majority"`, the default: more than half of them, or a number), by
/// JSON equality -> `{decision, tally: [{value, votes}], responded}`.
/// No quorum: PF409 with the tally. A poll, not consensus: nothing is
/// recorded, and a voter that fails does not vote.
pub(super) fn vote() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("co:vote", &data)?;
        let voters = args.steps("voters")?;
        let quorum = match args.get("quorum") {
            None => voters.len() / 2 + 1,
            Some(Value::String(s)) if s == "majority" => voters.len() / 2 + 1,
            Some(v) => match v.as_u64() {
                Some(k) if k >= 1 && k as usize <= voters.len() => k as usize,
                _ => {
                    return Err(args.bad(
                        "quorum",
                        format!("must be \"majority\" or an integer 1-{}, got {v}", voters.len()),
                    ))
                }
            },
        };
        let input = args.get("input").cloned().unwrap_or(Value::Null);
        let answers: Vec<Result<Value, PfError>> =
            futures::future::join_all(voters.iter().map(|v| v.run(&ctx, input.clone()))).await;
        let mut tally: Vec<(Value, u64)> = Vec::new();
        let mut responded = 0u64;
        for value in answers.into_iter().flatten() {
            responded += 1;
            match tally.iter_mut().find(|(v, _)| *v == value) {
                Some((_, votes)) => *votes += 1,
                None => tally.push((value, 1)),
            }
        }
        tally.sort_by_key(|(_, votes)| std::cmp::Reverse(*votes));
        let shown: Vec<Value> =
            tally.iter().map(|(value, votes)| json!({"value": value, "votes": votes})).collect();
        match tally.first() {
            Some((decision, votes)) if *votes as usize >= quorum => {
                Ok(json!({"decision": decision, "tally": shown, "responded": responded}))
            }
            _ => Err(PfError::new(
                ErrorCode::DuplicateId,
                format!(
                    "co:vote: no answer reached the quorum of {quorum} ({responded} of {} voters responded; tally {})",
                    voters.len(),
                    Value::Array(shown)
                ),
            )),
        }
    })
}
