//! `packetflow.Actors` (``Reactor.actors``): register actor types, create,
//! message, stop and list actors. Every rule (ids, types, options, what a
//! message may be) is the core's; this module converts arguments and
//! results.

use std::future::Future;
use std::sync::Arc;

use packetflow::actor::{Ask, Op};
use packetflow::{ActorRef, PacketParts, Reactor, Value};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::bridge::{self, HomeLoop};
use crate::outcome::Outcome;
use crate::pool::Pool;
use crate::sockets::Sockets;
use crate::{actor, actor_ref, awaitable, blocking, convert, errors, pystr};

/// The actors of a reactor (``Reactor.actors``).
///
/// Each awaitable method has a ``_sync`` twin that blocks the calling
/// thread (with the GIL released), for code without a running event loop.
#[pyclass(frozen, name = "Actors", module = "packetflow")]
pub(crate) struct PyActors {
    core: Reactor,
    home: Arc<HomeLoop>,
    pool: Arc<Pool>,
    /// Where the reactor's connections run (its `_sync` methods may move them).
    sockets: Arc<Sockets>,
}

impl PyActors {
    pub(crate) fn new(
        core: Reactor,
        home: Arc<HomeLoop>,
        pool: Arc<Pool>,
        sockets: Arc<Sockets>,
    ) -> PyActors {
        PyActors { core, home, pool, sockets }
    }

    /// Runs `work` for an awaiting caller on the running loop.
    fn spawn<'py, T: Outcome>(
        &self,
        py: Python<'py>,
        what: &str,
        work: impl Future<Output = T> + Send + 'static,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bridge = bridge::current(py, what)?;
        self.home.adopt(&bridge);
        awaitable::spawn(py, &bridge, work)
    }
}

/// Asks `op` of `actor` with the caller's options (the core judges them now,
/// PF400 naming the field, and decides whether the message travels as a
/// packet): the future of the answer.
#[allow(clippy::too_many_arguments)]
fn ask(
    py: Python<'_>,
    actors: &packetflow::actor::Actors,
    actor: &ActorRef,
    op: Op,
    data: Option<Value>,
    packet_id: Option<&Bound<'_, PyAny>>,
    priority: Option<&Bound<'_, PyAny>>,
    timeout_ms: Option<&Bound<'_, PyAny>>,
    metadata: Option<&Bound<'_, PyAny>>,
) -> PyResult<Ask> {
    let parts = message_parts(data, packet_id, priority, timeout_ms, metadata)?;
    actors.ask_with(actor, op, parts).map_err(|e| errors::to_pyerr(py, &e))
}

/// What a message is made of, as the caller gave it.
fn message_parts<'a>(
    data: Option<Value>,
    packet_id: Option<&'a Bound<'_, PyAny>>,
    priority: Option<&'a Bound<'_, PyAny>>,
    timeout_ms: Option<&'a Bound<'_, PyAny>>,
    metadata: Option<&'a Bound<'_, PyAny>>,
) -> PyResult<PacketParts<'a>> {
    Ok(PacketParts {
        id: packet_id.map(convert::to_field),
        data,
        priority: priority.map(convert::to_field),
        timeout_ms: timeout_ms.map(convert::to_field),
        metadata: metadata.map(|m| convert::to_value(m, "metadata")).transpose()?,
        ..PacketParts::default()
    })
}

/// The address of a new actor: `id`, or a fresh UUID v4.
fn new_actor(
    py: Python<'_>,
    actor_type: &Bound<'_, PyString>,
    id: Option<&Bound<'_, PyString>>,
) -> PyResult<ActorRef> {
    let actor_type = pystr::as_str(actor_type)?;
    let made = match id {
        Some(id) => ActorRef::new(actor_type, pystr::as_str(id)?),
        None => ActorRef::generate(actor_type),
    };
    made.map_err(|e| errors::to_pyerr(py, &e))
}

#[pymethods]
impl PyActors {
    /// Registers (or replaces) actor type ``name`` on this reactor.
    ///
    /// ``behavior`` is a class whose public methods ``(self, message,
    /// ctx)`` handle the message types of the same names (``self.state`` is
    /// the actor's state), or a mapping of message types to functions
    /// ``(message, ctx)`` (``ctx.state`` is the state). Methods may be
    /// ``def`` (run on a handler thread) or ``async def`` (run on the event
    /// loop running now; registered outside a loop, on the reactor's home
    /// loop: the first loop that used it, while that loop runs). ``initial_state`` (or the class attribute of that
    /// name), when not ``None``, makes the actors virtual: a message for an
    /// id that does not exist creates it with a copy of that state.
    #[pyo3(signature = (name, behavior, *, initial_state = None))]
    fn register_behavior(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        behavior: &Bound<'_, PyAny>,
        initial_state: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = pystr::as_str(name)?;
        let spec = actor::actor_type(py, name, behavior, initial_state, &self.home, &self.pool)?;
        self.core.actors().register(name, spec).map_err(|e| errors::to_pyerr(py, &e))
    }

    /// Creates an actor of ``actor_type`` with ``state`` (any JSON value);
    /// an awaitable of its :class:`ActorRef`. ``id`` names it (a fresh UUID
    /// when left out); PF409 if it exists.
    #[pyo3(signature = (actor_type, state = None, *, id = None, packet_id = None, priority = None, timeout_ms = None, metadata = None))]
    #[allow(clippy::too_many_arguments)]
    fn create<'py>(
        &self,
        py: Python<'py>,
        actor_type: &Bound<'py, PyString>,
        state: Option<&Bound<'py, PyAny>>,
        id: Option<&Bound<'py, PyString>>,
        packet_id: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let actor = new_actor(py, actor_type, id)?;
        let state = state.map(|s| convert::to_value(s, "state")).transpose()?;
        let actors = self.core.actors();
        let answer = ask(py, &actors, &actor, Op::Create, state, packet_id, priority, timeout_ms, metadata)?;
        self.spawn(py, "Actors.create()", async move { answer.await.map(|_| actor) })
    }

    /// Like :meth:`create`, blocking the calling thread (GIL released).
    #[pyo3(signature = (actor_type, state = None, *, id = None, packet_id = None, priority = None, timeout_ms = None, metadata = None))]
    #[allow(clippy::too_many_arguments)]
    fn create_sync<'py>(
        &self,
        py: Python<'py>,
        actor_type: &Bound<'py, PyString>,
        state: Option<&Bound<'py, PyAny>>,
        id: Option<&Bound<'py, PyString>>,
        packet_id: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let actor = new_actor(py, actor_type, id)?;
        let state = state.map(|s| convert::to_value(s, "state")).transpose()?;
        let actors = self.core.actors();
        let answer = ask(py, &actors, &actor, Op::Create, state, packet_id, priority, timeout_ms, metadata)?;
        blocking::wait(py, "Actors.create_sync()", "Actors.create()", Some(&self.sockets), async move {
            answer.await.map(|_| actor)
        })?
        .into_py(py)
    }

    /// Sends ``message`` (a dict whose ``"type"`` names the method) to
    /// ``actor``; an awaitable of the turn's answer. A failed turn raises
    /// :class:`PacketFlowError` (``ActorNotFoundError``, PF404, for an
    /// actor that does not exist and is not virtual). Re-sending with the
    /// same ``packet_id`` is answered from memory, without running again.
    #[pyo3(signature = (actor, message, *, packet_id = None, priority = None, timeout_ms = None, metadata = None))]
    #[allow(clippy::too_many_arguments)]
    fn send<'py>(
        &self,
        py: Python<'py>,
        actor: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
        packet_id: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let actor = actor_ref::address(actor, "actor")?;
        let message = convert::to_value(message, "message")?;
        let actors = self.core.actors();
        let answer =
            ask(py, &actors, &actor, Op::Send, Some(message), packet_id, priority, timeout_ms, metadata)?;
        self.spawn(py, "Actors.send()", answer)
    }

    /// Like :meth:`send`, blocking the calling thread (GIL released).
    #[pyo3(signature = (actor, message, *, packet_id = None, priority = None, timeout_ms = None, metadata = None))]
    #[allow(clippy::too_many_arguments)]
    fn send_sync<'py>(
        &self,
        py: Python<'py>,
        actor: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
        packet_id: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let actor = actor_ref::address(actor, "actor")?;
        let message = convert::to_value(message, "message")?;
        let actors = self.core.actors();
        let answer =
            ask(py, &actors, &actor, Op::Send, Some(message), packet_id, priority, timeout_ms, metadata)?;
        blocking::wait(py, "Actors.send_sync()", "Actors.send()", Some(&self.sockets), answer)?.into_py(py)
    }

    /// Sends ``message`` to ``actor`` without waiting for its turn (a
    /// tell). The message has its place in the actor's mailbox when this
    /// returns, so tells from one sender keep their order; a failed turn is
    /// counted in the type's ``tells_failed``. Raises at once for a message
    /// the core refuses.
    #[pyo3(signature = (actor, message, *, packet_id = None, priority = None, timeout_ms = None, metadata = None))]
    #[allow(clippy::too_many_arguments)]
    fn tell(
        &self,
        py: Python<'_>,
        actor: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
        packet_id: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
        timeout_ms: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let actor = actor_ref::address(actor, "actor")?;
        let message = convert::to_value(message, "message")?;
        let parts = message_parts(Some(message), packet_id, priority, timeout_ms, metadata)?;
        let packet = actor.packet_from(Op::Send, parts).map_err(|e| errors::to_pyerr(py, &e))?;
        let _runtime = crate::runtime::runtime()?.enter();
        self.core.actors().tell_packet(&actor, packet).map_err(|e| errors::to_pyerr(py, &e))
    }

    /// Stops ``actor`` after the messages queued before this, and deletes
    /// its state (an awaitable of ``None``). PF404 if it does not exist.
    fn stop<'py>(&self, py: Python<'py>, actor: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let (actors, actor) = (self.core.actors(), actor_ref::address(actor, "actor")?);
        self.spawn(py, "Actors.stop()", async move { actors.stop(&actor).await })
    }

    /// Like :meth:`stop`, blocking the calling thread (GIL released).
    fn stop_sync(&self, py: Python<'_>, actor: &Bound<'_, PyAny>) -> PyResult<()> {
        let (actors, actor) = (self.core.actors(), actor_ref::address(actor, "actor")?);
        blocking::wait(py, "Actors.stop_sync()", "Actors.stop()", Some(&self.sockets), async move {
            actors.stop(&actor).await
        })?
        .map_err(|e| errors::to_pyerr(py, &e))
    }

    /// The ids of the actors of ``actor_type`` this reactor hosts, in
    /// memory or in its store, sorted (an awaitable). PF404 if the type is
    /// not registered here.
    fn list<'py>(&self, py: Python<'py>, actor_type: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        let (actors, actor_type) = (self.core.actors(), pystr::as_str(actor_type)?.to_owned());
        self.spawn(py, "Actors.list()", async move { actors.list(&actor_type).await })
    }

    /// Like :meth:`list`, blocking the calling thread (GIL released).
    fn list_sync<'py>(
        &self,
        py: Python<'py>,
        actor_type: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (actors, actor_type) = (self.core.actors(), pystr::as_str(actor_type)?.to_owned());
        blocking::wait(py, "Actors.list_sync()", "Actors.list()", Some(&self.sockets), async move {
            actors.list(&actor_type).await
        })?
        .into_py(py)
    }

    /// How many actors of ``actor_type`` this reactor hosts (see
    /// :meth:`list`); an awaitable.
    fn count<'py>(&self, py: Python<'py>, actor_type: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        let (actors, actor_type) = (self.core.actors(), pystr::as_str(actor_type)?.to_owned());
        self.spawn(py, "Actors.count()", async move { actors.count(&actor_type).await })
    }

    /// Like :meth:`count`, blocking the calling thread (GIL released).
    fn count_sync<'py>(
        &self,
        py: Python<'py>,
        actor_type: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (actors, actor_type) = (self.core.actors(), pystr::as_str(actor_type)?.to_owned());
        blocking::wait(py, "Actors.count_sync()", "Actors.count()", Some(&self.sockets), async move {
            actors.count(&actor_type).await
        })?
        .into_py(py)
    }

    /// Passivates now every actor idle for longer than the reactor's
    /// ``actor_passivate_after_ms`` (a sweep also runs on its own every
    /// quarter of that time); an awaitable of how many left memory.
    fn passivate_idle<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let actors = self.core.actors();
        self.spawn(py, "Actors.passivate_idle()", async move {
            Ok::<usize, packetflow::PfError>(actors.passivate_idle().await)
        })
    }

    fn __repr__(&self) -> String {
        format!("Actors(reactor={:?})", self.core.config().name)
    }
}

/// What ``Reactor.actor(name)`` returns: applied to a class, it registers
/// the class as the behaviour of actor type ``name`` and returns it.
#[pyclass(frozen, module = "packetflow._native")]
pub(crate) struct ActorDecorator {
    actors: Py<PyActors>,
    name: String,
}

impl ActorDecorator {
    pub(crate) fn new(actors: Py<PyActors>, name: String) -> ActorDecorator {
        ActorDecorator { actors, name }
    }
}

#[pymethods]
impl ActorDecorator {
    fn __call__<'py>(&self, py: Python<'py>, behavior: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let name = PyString::new(py, &self.name);
        self.actors.bind(py).get().register_behavior(py, &name, &behavior, None)?;
        Ok(behavior)
    }
}
