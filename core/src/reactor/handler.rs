//! Handlers: what the reactor calls for a `group:element`.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use super::Context;
use crate::error::{ErrorCode, PfError};

/// What a handler returns: the result's `data`, or the error that becomes
/// the result's `error` (usually PF500, see [`HandlerError::failed`]).
pub type HandlerResult = Result<Value, HandlerError>;

/// A handler's failure. It is a [`PfError`], so a handler can pass on the
/// code of a failed inner call (`?` on [`Context::call`]) unchanged.
pub type HandlerError = PfError;

impl PfError {
    /// A PF500 handler failure with `message`.
    pub fn failed(message: impl Into<String>) -> PfError {
        PfError::new(ErrorCode::HandlerFailed, message)
    }
}

pub(crate) type SyncFn = dyn Fn(Value, &Context) -> HandlerResult + Send + Sync;
type AsyncFn = dyn Fn(Value, Context) -> BoxFuture<'static, HandlerResult> + Send + Sync;

/// A registered handler, sync or async.
#[derive(Clone)]
pub enum Handler {
    /// Runs inline on the submitting task; for quick, non-blocking work.
    Sync(Arc<SyncFn>),
    /// Awaited with the packet's deadline.
    Async(Arc<AsyncFn>),
}

impl Handler {
    /// Wraps an async fn `(data, ctx) -> HandlerResult`.
    pub fn from_async<F, Fut>(f: F) -> Handler
    where
        F: Fn(Value, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        Handler::Async(Arc::new(move |data, ctx| Box::pin(f(data, ctx))))
    }

    /// Wraps a sync fn `(data, &ctx) -> HandlerResult`.
    pub fn from_sync<F>(f: F) -> Handler
    where
        F: Fn(Value, &Context) -> HandlerResult + Send + Sync + 'static,
    {
        Handler::Sync(Arc::new(f))
    }
}
