//! [`ActorContext`]: what a behaviour knows during a turn.

use std::ops::Deref;

use super::ActorRef;
use crate::reactor::Context;

/// The context of one turn: the message packet's [`Context`] (its id,
/// metadata, deadline, and `call`/`send` on its behalf) and the address of
/// the actor running it.
///
/// Calls and messages sent from a turn carry the turn's packet id in
/// `pf.turns`, so that a message coming back to this actor through them
/// is recognised as reentrant (see docs/protocol.md, "Actors").
#[derive(Clone)]
pub struct ActorContext {
    ctx: Context,
    actor: ActorRef,
}

impl ActorContext {
    pub(crate) fn new(ctx: Context, actor: ActorRef) -> ActorContext {
        ActorContext { ctx, actor }
    }

    /// The actor running this turn.
    pub fn actor(&self) -> &ActorRef {
        &self.actor
    }

    /// The packet context, for code written against [`Context`].
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

impl Deref for ActorContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}
