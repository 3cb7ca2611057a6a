//! `df`: data flow over lists. `transform` and `consume` call their step
//! for many items at once (`concurrency`, default 16); results keep the
//! input's order.

use futures::stream::{self, StreamExt};
use serde_json::{json, Map, Value};

use super::args::{error_value, Args, MAX_ITEMS};
use super::step::{kind, Step};
use crate::error::PfError;
use crate::reactor::{Context, Handler};

/// Calls at once per element, unless `concurrency` says otherwise.
const DEFAULT_CONCURRENCY: u64 = 16;
/// The most `concurrency` may be.
const MAX_CONCURRENCY: u64 = 1000;

fn concurrency(args: &Args<'_>) -> Result<usize, PfError> {
    Ok(args.int_in("concurrency", 1, MAX_CONCURRENCY)?.unwrap_or(DEFAULT_CONCURRENCY) as usize)
}

/// Runs `step` on every item, `limit` at a time; each answer with its
/// index, in the order they come.
fn each<'a>(
    ctx: &'a Context,
    step: &'a Step,
    items: &'a [Value],
    limit: usize,
) -> impl futures::Stream<Item = (usize, Result<Value, PfError>)> + 'a {
    stream::iter(items.iter().enumerate())
        .map(move |(i, item)| async move { (i, step.run(ctx, item.clone()).await) })
        .buffer_unordered(limit)
}

/// `df:produce` `{source, count?, until_null?}`: calls `source` (its own
/// data, else `{"index": i}`) `count` times, or until it answers `null`
/// (not kept) -> the list of its answers.
pub(super) fn produce() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("df:produce", &data)?;
        let source = args.step("source")?;
        let count = args.int_in("count", 0, MAX_ITEMS)?;
        let until_null = args.bool("until_null")?;
        if count.is_none() && !until_null {
            return Err(args.bad("count", "is required unless until_null is true"));
        }
        let mut items = Vec::new();
        for i in 0..count.unwrap_or(MAX_ITEMS) {
            let label = format!("df:produce source, call {i}");
            let item = source.run(&ctx, json!({"index": i})).await.map_err(|e| source.failed(&label, e))?;
            if until_null && item.is_null() {
                return Ok(Value::Array(items));
            }
            items.push(item);
        }
        if until_null && count.is_none() {
            return Err(args.bad(
                "until_null",
                format!("the source answered no null within {MAX_ITEMS} calls (give a count)"),
            ));
        }
        Ok(Value::Array(items))
    })
}

/// `df:consume` `{items, sink, concurrency?}`: hands each item to `sink`
/// -> `{delivered, failed: [{index, code, message}]}`.
pub(super) fn consume() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("df:consume", &data)?;
        let (items, sink, limit) = (args.array("items")?, args.step("sink")?, concurrency(&args)?);
        let mut failed = Vec::new();
        let mut delivered = 0u64;
        let mut answers = std::pin::pin!(each(&ctx, &sink, items, limit));
        while let Some((index, answer)) = answers.next().await {
            match answer {
                Ok(_) => delivered += 1,
                Err(e) => failed.push((index, e)),
            }
        }
        failed.sort_by_key(|(i, _)| *i);
        let failed: Vec<Value> = failed
            .iter()
            .map(|(index, e)| json!({"index": index, "code": e.code, "message": e.message}))
            .collect();
        Ok(json!({"delivered": delivered, "failed": failed}))
    })
}

/// `df:transform` `{items, fn, concurrency?, on_error?}`: `fn` on every
/// item, in parallel -> the results in input order. On a failure:
/// `"fail"` (the default) answers it (naming the item), `"skip"` leaves
/// the item out, `"collect"` puts `{"error": {code, message}}` in its place.
pub(super) fn transform() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("df:transform", &data)?;
        let (items, f, limit) = (args.array("items")?, args.step("fn")?, concurrency(&args)?);
        let on_error = args.choice("on_error", &["fail", "skip", "collect"])?.unwrap_or("fail");
        let mut results: Vec<Option<Value>> = vec![None; items.len()];
        let mut answers = std::pin::pin!(each(&ctx, &f, items, limit));
        while let Some((index, answer)) = answers.next().await {
            results[index] = match (answer, on_error) {
                (Ok(value), _) => Some(value),
                (Err(e), "fail") => return Err(f.failed(&format!("df:transform fn, item {index}"), e)),
                (Err(_), "skip") => None,
                (Err(e), _) => Some(json!({"error": error_value(&e)})),
            };
        }
        Ok(Value::Array(results.into_iter().flatten().collect()))
    })
}

/// `df:reduce` `{items, op, initial?}` (`sum`, `min`, `max`, `concat`,
/// `merge`, `count`) or `{items, fn, initial}`, a fold: `fn` gets
/// `{"acc", "item"}` and answers the next `acc` -> the value.
pub(super) fn reduce() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("df:reduce", &data)?;
        let items = args.array("items")?;
        let initial = args.get("initial").cloned();
        match (args.get("op"), args.optional_step("fn")?) {
            (Some(_), Some(_)) => Err(args.bad("op", "and fn cannot both be given")),
            (None, None) => Err(args.bad("op", "or fn is required")),
            (None, Some(f)) => {
                let mut acc = initial.ok_or_else(|| args.bad("initial", "is required with fn"))?;
                for (i, item) in items.iter().enumerate() {
                    let label = format!("df:reduce fn, item {i}");
                    acc = f
                        .run(&ctx, json!({"acc": acc, "item": item}))
                        .await
                        .map_err(|e| f.failed(&label, e))?;
                }
                Ok(acc)
            }
            (Some(_), None) => {
                let op =
                    args.choice("op", &["sum", "min", "max", "concat", "merge", "count"])?.unwrap_or("sum");
                fold(&args, op, items, initial)
            }
        }
    })
}

/// A built-in reduction; PF400 naming the first item it cannot take.
fn fold(args: &Args<'_>, op: &str, items: &[Value], initial: Option<Value>) -> Result<Value, PfError> {
    let wrong = |i: usize, want: &str, got: &Value| {
        args.bad(&format!("items[{i}]"), format!("must be {want} for op {op}, got {}", kind(got)))
    };
    match op {
        "count" => Ok(json!(items.len() as u64 + initial.as_ref().and_then(Value::as_u64).unwrap_or(0))),
        "sum" => {
            let (mut int, mut float, mut is_float) = (0i64, 0f64, false);
            let start = initial.unwrap_or(json!(0));
            for (i, v) in std::iter::once(&start).chain(items).enumerate() {
                let at = i.wrapping_sub(1);
                match (v.as_i64(), v.as_f64()) {
                    (Some(n), _) if !is_float => match int.checked_add(n) {
                        Some(sum) => int = sum,
                        None => (is_float, float) = (true, int as f64 + n as f64),
                    },
                    (_, Some(f)) => {
                        if !is_float {
                            (is_float, float) = (true, int as f64);
                        }
                        float += f;
                    }
                    _ if i == 0 => {
                        return Err(
                            args.bad("initial", format!("must be a number for op sum, got {}", kind(v)))
                        )
                    }
                    _ => return Err(wrong(at, "a number", v)),
                }
            }
            Ok(if is_float { json!(float) } else { json!(int) })
        }
        "min" | "max" => {
            let mut best: Option<&Value> = initial.as_ref();
            for (i, v) in items.iter().enumerate() {
                let Some(f) = v.as_f64() else { return Err(wrong(i, "a number", v)) };
                let better =
                    best.and_then(Value::as_f64).is_none_or(|b| if op == "min" { f < b } else { f > b });
                if better {
                    best = Some(v);
                }
            }
            Ok(best.cloned().unwrap_or(Value::Null))
        }
        "concat" => {
            match items.first().or(initial.as_ref()) {
                None => Ok(initial.unwrap_or(Value::Null)),
                Some(Value::String(_)) => {
                    let mut out = match initial {
                        Some(Value::String(s)) => s,
                        None => String::new(),
                        Some(other) => {
                            return Err(args.bad(
                                "initial",
                                format!("must be a string like the items, got {}", kind(&other)),
                            ))
                        }
                    };
                    for (i, v) in items.iter().enumerate() {
                        out.push_str(v.as_str().ok_or_else(|| wrong(i, "a string", v))?);
                    }
                    Ok(Value::String(out))
                }
                Some(Value::Array(_)) => {
                    let mut out = match initial {
                        Some(Value::Array(a)) => a,
                        None => Vec::new(),
                        Some(other) => {
                            return Err(args.bad(
                                "initial",
                                format!("must be an array like the items, got {}", kind(&other)),
                            ))
                        }
                    };
                    for (i, v) in items.iter().enumerate() {
                        out.extend(v.as_array().ok_or_else(|| wrong(i, "an array", v))?.iter().cloned());
                    }
                    Ok(Value::Array(out))
                }
                Some(other) => Err(args
                    .bad("items", format!("must hold strings or arrays for op concat, got {}", kind(other)))),
            }
        }
        _ => {
            // merge: a shallow merge of objects, later keys winning.
            let mut out = match initial {
                Some(Value::Object(m)) => m,
                None => Map::new(),
                Some(other) => {
                    return Err(
                        args.bad("initial", format!("must be an object for op merge, got {}", kind(&other)))
                    )
                }
            };
            for (i, v) in items.iter().enumerate() {
                let Value::Object(m) = v else { return Err(wrong(i, "an object", v)) };
                out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Ok(Value::Object(out))
        }
    }
}
