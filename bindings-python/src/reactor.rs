//! `packetflow.Reactor`: the Python face of the core reactor.

use std::sync::Arc;

use packetflow::actor::FileStore;
use packetflow::stdlib::StdlibPatterns;
use packetflow::{Node, NodeConfig, Packet, PacketId, PacketParts, Reactor, ReactorConfig, Value};
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::actors::{ActorDecorator, PyActors};
use crate::bridge::{self, HomeLoop};
use crate::context::target;
use crate::handler::{self, PyHandler};
use crate::invoke::{self, LoopBinding};
use crate::pool::Pool;
use crate::result::PyPacketResult;
use crate::sockets::{self, Sockets};
use crate::{awaitable, blocking, convert, errors, options, pystr};

/// Registers handlers and routes packets to them.
///
/// Create one with ``Reactor(name=...)``; use it as ``async with Reactor()
/// as r:`` (or ``with``) to stop it on exit. ``submit``/``call`` are
/// awaitables for code running in an asyncio event loop; ``submit_sync``/
/// ``call_sync`` block the calling thread (with the GIL released) for code
/// without one. A reactor that is garbage-collected stops like ``stop()``.
#[pyclass(frozen, name = "Reactor", module = "packetflow", weakref)]
pub(crate) struct PyReactor {
    core: Reactor,
    /// Where `async def` handlers registered outside any loop run when
    /// their packet does not come from a loop.
    home: Arc<HomeLoop>,
    pool: Arc<Pool>,
    /// The network node, made by the first `listen` or `connect`.
    node: Mutex<Option<Node>>,
    /// `NodeConfig::busy_poll` of that node.
    busy_poll: Option<std::time::Duration>,
    /// Where the node's connections run (see `sockets.rs`).
    sockets: Arc<Sockets>,
}

impl Drop for PyReactor {
    fn drop(&mut self) {
        self.core.stop();
        self.pool.stop();
        // Nothing can wait here: the node closes its connections in the
        // background.
        if let Some(node) = self.node.lock().take() {
            if !crate::runtime::shutting_down() {
                if let Ok(rt) = crate::runtime::runtime() {
                    rt.spawn(async move { node.stop().await });
                }
            }
        }
    }
}

impl PyReactor {
    /// The reactor's network node, made on first use: with `sockets="loop"`
    /// and a loop running here whose selector watches sockets, its
    /// connections run on that loop.
    fn node(&self, py: Python<'_>) -> PyResult<Node> {
        let mut node = self.node.lock();
        if let Some(existing) = &*node {
            return Ok(existing.clone());
        }
        // The node starts a task of its own: it needs the runtime's context.
        let _runtime = crate::runtime::runtime()?.enter();
        let mut config =
            NodeConfig { runtime: "python".into(), busy_poll: self.busy_poll, ..NodeConfig::default() };
        let bridge = match bridge::running_loop(py)? {
            Some(_) => Some(bridge::current(py, "Reactor.listen()")?),
            None => None,
        };
        config.spawner = self.sockets.spawner(bridge);
        let made = Node::new(self.core.clone(), config);
        *node = Some(made.clone());
        Ok(made)
    }

    fn existing_node(&self) -> Option<Node> {
        self.node.lock().clone()
    }
}

/// The arguments of `submit` and friends as the core's packet: values are
/// converted (`data` and `metadata` to JSON values, the other fields to
/// [`Field`](packetflow::Field)s), and the core checks and builds the packet, so a bad field
/// is the PF400 a peer sending it in a frame would get.
#[allow(clippy::too_many_arguments)]
fn build_packet(
    py: Python<'_>,
    group: &Bound<'_, PyAny>,
    element: &Bound<'_, PyAny>,
    data: Option<&Bound<'_, PyAny>>,
    priority: Option<&Bound<'_, PyAny>>,
    timeout_ms: Option<&Bound<'_, PyAny>>,
    dependencies: Option<&Bound<'_, PyAny>>,
    metadata: Option<&Bound<'_, PyAny>>,
    packet_id: Option<&Bound<'_, PyAny>>,
) -> PyResult<Packet> {
    let parts = PacketParts {
        id: packet_id.map(convert::to_field),
        group: Some(convert::to_field(group)),
        element: Some(convert::to_field(element)),
        data: data.map(|d| convert::to_value(d, "data")).transpose()?,
        priority: priority.map(convert::to_field),
        timeout_ms: timeout_ms.map(convert::to_field),
        dependencies: dependencies.map(convert::to_field),
        metadata: metadata.map(|m| convert::to_value(m, "metadata")).transpose()?,
    };
    parts.into_packet().map_err(|e| errors::to_pyerr(py, &e))
}

fn stats_dict<'py>(
    py: Python<'py>,
    stats: packetflow::reactor::ReactorStats,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("name", stats.name)?;
    out.set_item("in_flight", stats.in_flight)?;
    out.set_item("queued", stats.queued)?;
    out.set_item("unrouted", stats.unrouted)?;
    out.set_item("forwards_cancelled", stats.forwards_cancelled)?;
    let handlers = PyList::empty(py);
    for h in stats.handlers {
        let d = PyDict::new(py);
        d.set_item("group", h.group.as_str())?;
        d.set_item("element", h.element.as_str())?;
        d.set_item("count", h.count)?;
        d.set_item("errors", h.errors)?;
        d.set_item("cancelled", h.cancelled)?;
        d.set_item("sum_us", h.sum_us)?;
        d.set_item("p50_us", h.p50_us)?;
        d.set_item("p99_us", h.p99_us)?;
        d.set_item("latency_buckets", h.latency_buckets)?;
        handlers.append(d)?;
    }
    out.set_item("handlers", handlers)?;
    let actors = PyList::empty(py);
    for a in stats.actors {
        let d = PyDict::new(py);
        d.set_item("actor_type", a.actor_type)?;
        d.set_item("active", a.active)?;
        d.set_item("passivated", a.passivated)?;
        d.set_item("activations", a.activations)?;
        d.set_item("passivations", a.passivations)?;
        d.set_item("tells_failed", a.tells_failed)?;
        actors.append(d)?;
    }
    out.set_item("actors", actors)?;
    let routed = PyDict::new(py);
    routed.set_item("local", stats.routed.local)?;
    routed.set_item("websocket", stats.routed.websocket)?;
    routed.set_item("nats", stats.routed.nats)?;
    out.set_item("routed", routed)?;
    match stats.nats {
        Some(n) => {
            let d = PyDict::new(py);
            d.set_item("state", n.state)?;
            d.set_item("server", n.server)?;
            d.set_item("rtt_us", n.rtt_us)?;
            d.set_item("served_keys", n.served_keys)?;
            d.set_item("bridged_keys", n.bridged_keys)?;
            d.set_item("requests_sent", n.requests_sent)?;
            d.set_item("requests_served", n.requests_served)?;
            d.set_item("members", n.members)?;
            out.set_item("nats", d)?;
        }
        None => out.set_item("nats", py.None())?,
    }
    Ok(out)
}

#[pymethods]
impl PyReactor {
    /// Creates a reactor. ``max_inflight``: most handlers running at once;
    /// ``max_queue``: most packets waiting for a slot (past it, PF429);
    /// ``finished_memory``: how many finished ids are remembered for late
    /// dependents; ``handler_threads``: most threads running ``def``
    /// handlers; ``busy_poll_us``: microseconds to keep polling the network
    /// after frames arrive instead of sleeping (0: off); ``actor_store``: a
    /// file (redb) keeping the actors' state, written before each answer
    /// leaves (default: memory); ``actor_passivate_after_ms``: idle time
    /// after which an actor leaves memory; ``actor_remembered_turns``: how
    /// many answered packet ids each actor remembers; ``sockets``: where the
    /// network connections run: by default on the event loop of the first
    /// ``listen``/``connect`` if one runs, until the reactor busy-polls or
    /// a ``_sync`` method of it is called; ``"loop"``: there even then;
    /// ``"thread"``: on the runtime's threads; ``stdlib``: the standard
    /// elements to host (docs/stdlib.md), as comma-separated keys and
    /// patterns (``"cf:*,co:gather"``, ``"*"`` for all; default none).
    /// Omitted options take the core's defaults, and the core checks the
    /// values (PF400).
    #[new]
    #[pyo3(signature = (name = "packetflow", *, max_inflight = None, max_queue = None, finished_memory = None, handler_threads = 8, busy_poll_us = None, actor_store = None, actor_passivate_after_ms = None, actor_remembered_turns = None, sockets = None, stdlib = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        max_inflight: Option<usize>,
        max_queue: Option<usize>,
        finished_memory: Option<usize>,
        handler_threads: usize,
        busy_poll_us: Option<u32>,
        actor_store: Option<&Bound<'_, PyAny>>,
        actor_passivate_after_ms: Option<u64>,
        actor_remembered_turns: Option<usize>,
        sockets: Option<&str>,
        stdlib: Option<&str>,
    ) -> PyResult<Self> {
        crate::runtime::check_not_forked()?;
        let defaults = ReactorConfig::default();
        let config = ReactorConfig {
            name: name.to_owned(),
            max_inflight: max_inflight.unwrap_or(defaults.max_inflight),
            max_queue: max_queue.unwrap_or(defaults.max_queue),
            finished_memory: finished_memory.unwrap_or(defaults.finished_memory),
            actor_passivate_after: actor_passivate_after_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(defaults.actor_passivate_after),
            actor_remembered_turns: actor_remembered_turns.unwrap_or(defaults.actor_remembered_turns),
        };
        config.validate().map_err(|e| errors::to_pyerr(py, &e))?;
        let stdlib =
            StdlibPatterns::parse(stdlib.unwrap_or_default()).map_err(|e| errors::to_pyerr(py, &e))?;
        let actor_store = options::path(actor_store, "actor_store")?;
        // The handler threads are this binding's own: it checks their number.
        if handler_threads == 0 {
            return Err(PyValueError::new_err("handler_threads must be at least 1, got 0"));
        }
        let busy_poll = match busy_poll_us {
            None => NodeConfig::default().busy_poll,
            Some(0) => None,
            Some(us) => Some(std::time::Duration::from_micros(us.into())),
        };
        let sockets = Sockets::new(sockets::Mode::parse(sockets, busy_poll.is_some())?);
        let core = Reactor::new(config);
        if let Some(path) = actor_store {
            let store = FileStore::open(&path).map_err(|e| errors::to_pyerr(py, &e))?;
            core.actors().set_store(Arc::new(store)).map_err(|e| errors::to_pyerr(py, &e))?;
        }
        // After the store: stateful elements keep their state in actors.
        core.enable_stdlib(&stdlib);
        Ok(PyReactor {
            core,
            home: Arc::new(HomeLoop::default()),
            pool: Pool::new(handler_threads),
            node: Mutex::new(None),
            busy_poll,
            sockets,
        })
    }

    /// The reactor's name.
    #[getter]
    fn name(&self) -> &str {
        &self.core.config().name
    }

    /// Whether :meth:`stop` was called.
    #[getter]
    fn stopped(&self) -> bool {
        self.core.is_stopped()
    }

    /// Registers (or replaces) the handler of ``group:element``.
    ///
    /// ``fn(data, ctx)`` may be a ``def`` function (run on a handler thread,
    /// off the event loop) or an ``async def`` function (run on the event
    /// loop running when it is registered; if none runs, on the loop that
    /// submits the packet, else the loop the reactor was last entered from),
    /// each call in an asyncio task of its own. Every call runs in a fresh
    /// ``contextvars.Context``, as it would behind a network hop.
    /// Its return value is the result's data; an exception makes the packet
    /// fail with PF500 (or with the code of a raised PacketFlowError).
    fn register(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyString>,
        element: &Bound<'_, PyString>,
        r#fn: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let func = r#fn;
        let (g, e) = target(py, group, element)?;
        if !func.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "the handler of {g}:{e} must be callable, got {}",
                func.get_type().name()?
            )));
        }
        let h = Arc::new(PyHandler::new(py, func.clone().unbind(), format!("{g}:{e}")));
        let core_handler = if invoke::is_async(py, func)? {
            handler::async_handler(h, LoopBinding::for_registration(py, &self.home, "register()")?)
        } else {
            handler::sync_handler(h, self.pool.clone())
        };
        self.core.register_handler(&g, &e, core_handler).map_err(|err| errors::to_pyerr(py, &err))
    }

    /// A decorator registering the decorated function as the handler of
    /// ``group:element`` (the function is returned unchanged).
    fn handler(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        group: &Bound<'_, PyString>,
        element: &Bound<'_, PyString>,
    ) -> PyResult<HandlerDecorator> {
        let (g, e) = target(py, group, element)?;
        Ok(HandlerDecorator { reactor: slf.clone().unbind(), group: g, element: e })
    }

    /// The actors of this reactor: register actor types, create, message,
    /// stop and list actors.
    #[getter]
    fn actors(&self) -> PyActors {
        PyActors::new(self.core.clone(), self.home.clone(), self.pool.clone(), self.sockets.clone())
    }

    /// A decorator registering the decorated class as the behaviour of
    /// actor type ``name`` (see :meth:`Actors.register_behavior`); the class
    /// is returned unchanged.
    fn actor(&self, py: Python<'_>, name: &Bound<'_, PyString>) -> PyResult<ActorDecorator> {
        let actors = Py::new(py, self.actors())?;
        Ok(ActorDecorator::new(actors, pystr::as_str(name)?.to_owned()))
    }

    /// Removes the handler of ``group:element``; ``False`` if there was none.
    fn unregister(&self, group: &Bound<'_, PyString>, element: &Bound<'_, PyString>) -> PyResult<bool> {
        Ok(self.core.unregister(pystr::as_str(group)?, pystr::as_str(element)?))
    }

    /// Submits a packet; an awaitable of its :class:`Result`.
    ///
    /// The packet always gets one answer: the handler's value, or an error
    /// result (PF001 no handler, PF408 deadline, PF409 duplicate id, PF424
    /// failed dependency, PF429 queue full, PF499 cancelled, PF500 handler
    /// failure, PF503 stopped). Invalid arguments raise at once:
    /// ``InvalidPacketError`` (PF400) for a bad group, element, priority,
    /// timeout or id, and ``TypeError``/``ValueError`` for data that JSON
    /// cannot carry. Cancelling the task that awaits it cancels the packet
    /// (the awaiting code gets ``asyncio.CancelledError``); see
    /// :meth:`cancel` for a packet awaited elsewhere.
    #[pyo3(signature = (group, element, data = None, priority = None, timeout_ms = None, dependencies = None, metadata = None, packet_id = None))]
    #[allow(clippy::too_many_arguments)]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        element: &Bound<'py, PyAny>,
        data: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
        dependencies: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
        packet_id: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bridge = bridge::current(py, "Reactor.submit()")?;
        self.home.adopt(&bridge);
        let packet =
            build_packet(py, group, element, data, priority, timeout_ms, dependencies, metadata, packet_id)?;
        let core = self.core.clone();
        awaitable::spawn(py, &bridge, async move { core.submit(packet).await })
    }

    /// Submits a packet; an awaitable of its data. A failed packet raises
    /// :class:`PacketFlowError` (the subclass of its code).
    #[pyo3(signature = (group, element, data = None, priority = None, timeout_ms = None, dependencies = None, metadata = None, packet_id = None))]
    #[allow(clippy::too_many_arguments)]
    fn call<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        element: &Bound<'py, PyAny>,
        data: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
        dependencies: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
        packet_id: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bridge = bridge::current(py, "Reactor.call()")?;
        self.home.adopt(&bridge);
        let packet =
            build_packet(py, group, element, data, priority, timeout_ms, dependencies, metadata, packet_id)?;
        let core = self.core.clone();
        awaitable::spawn(py, &bridge, async move { core.call(packet).await })
    }

    /// Like :meth:`submit`, blocking the calling thread (GIL released) until
    /// the answer; for code without a running event loop. Ctrl-C (any
    /// exception a signal handler raises in the waiting main thread)
    /// cancels the packet and is raised; a packet cancelled by
    /// :meth:`cancel` (from another thread) returns its PF499 result.
    #[pyo3(signature = (group, element, data = None, priority = None, timeout_ms = None, dependencies = None, metadata = None, packet_id = None))]
    #[allow(clippy::too_many_arguments)]
    fn submit_sync(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        element: &Bound<'_, PyAny>,
        data: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
        timeout_ms: Option<&Bound<'_, PyAny>>,
        dependencies: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        packet_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyPacketResult> {
        let packet =
            build_packet(py, group, element, data, priority, timeout_ms, dependencies, metadata, packet_id)?;
        let core = self.core.clone();
        let result = blocking::wait(
            py,
            "Reactor.submit_sync()",
            "Reactor.submit()",
            Some(&self.sockets),
            async move { core.submit(packet).await },
        )?;
        Ok(PyPacketResult::from_core(py, result))
    }

    /// Like :meth:`call`, blocking the calling thread (GIL released) until
    /// the answer; for code without a running event loop.
    #[pyo3(signature = (group, element, data = None, priority = None, timeout_ms = None, dependencies = None, metadata = None, packet_id = None))]
    #[allow(clippy::too_many_arguments)]
    fn call_sync<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        element: &Bound<'py, PyAny>,
        data: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
        dependencies: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
        packet_id: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let packet =
            build_packet(py, group, element, data, priority, timeout_ms, dependencies, metadata, packet_id)?;
        let core = self.core.clone();
        let out =
            blocking::wait(py, "Reactor.call_sync()", "Reactor.call()", Some(&self.sockets), async move {
                core.call(packet).await
            })?;
        match out {
            Ok(value) => convert::to_py(py, &value),
            Err(err) => Err(errors::to_pyerr(py, &err)),
        }
    }

    /// Cancels the packet ``packet_id`` in flight on this reactor (submitted
    /// here by any caller or thread, or by a peer); ``True`` if it is in
    /// flight (cancelled now, or already: cancelling is idempotent),
    /// ``False`` if it is not (answered already, or unknown: nothing is
    /// remembered for a later submit). The packet is answered at once with
    /// :class:`PacketCancelledError` (PF499); a handler not started never
    /// starts, an ``async def`` handler's task is cancelled, a ``def``
    /// handler sees ``ctx.cancelled`` turn true; its ``ctx.call`` children
    /// are cancelled with it, here and on peers, and packets that depend on
    /// it fail with PF424. ``InvalidPacketError`` (PF400) for an id that no
    /// packet can have (empty, or over 128 bytes).
    fn cancel(&self, py: Python<'_>, packet_id: &Bound<'_, PyString>) -> PyResult<bool> {
        let id = PacketId::new(pystr::as_str(packet_id)?).map_err(|e| errors::to_pyerr(py, &e))?;
        Ok(self.core.cancel(&id))
    }

    /// Accepts peers on ``addr`` (``"HOST:PORT"``; port 0 picks a free
    /// one); an awaitable of the address bound, ``"HOST:PORT"``. Peers
    /// connect to ``ws://HOST:PORT/packetflow/v1`` (``wss://`` with TLS),
    /// where ``GET /health`` and ``GET /metrics`` are served too.
    ///
    /// ``auth_file`` (a tokens file, ``.toml`` or ``.json``) and/or
    /// ``tokens`` (a list of :class:`TokenSpec` dicts) make every peer
    /// present one of the tokens, and limit what it may submit and serve.
    /// ``tls_cert`` and ``tls_key`` (PEM files, both or neither) make the
    /// listener speak ``wss://`` only. Raises ``UnavailableError`` (PF503)
    /// if the address cannot be bound, ``InvalidPacketError`` (PF400) for a
    /// bad tokens file, token or TLS file, and ``TypeError``/``ValueError``
    /// naming the argument for values of the wrong shape.
    #[pyo3(signature = (addr, *, auth_file = None, tokens = None, tls_cert = None, tls_key = None))]
    fn listen<'py>(
        &self,
        py: Python<'py>,
        addr: &Bound<'py, PyString>,
        auth_file: Option<&Bound<'py, PyAny>>,
        tokens: Option<&Bound<'py, PyAny>>,
        tls_cert: Option<&Bound<'py, PyAny>>,
        tls_key: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bridge = bridge::current(py, "Reactor.listen()")?;
        let addr = pystr::as_str(addr)?.to_owned();
        let options = options::listen(auth_file, tokens, tls_cert, tls_key)?;
        let node = self.node(py)?;
        awaitable::spawn(py, &bridge, async move {
            node.listen_with(&addr, options).await.map(|bound| Value::String(bound.to_string()))
        })
    }

    /// Dials a peer (``"ws://HOST:PORT/packetflow/v1"``, or ``wss://``), or
    /// joins a NATS system (``"nats://HOST:PORT"`` or ``tls://``, several
    /// servers separated by commas); an awaitable that resolves once the
    /// connection is up and the peer's handlers are known (on NATS: once
    /// this reactor's handlers are subscribed on the server). Packets with
    /// no local handler are then routed to peers, then over NATS. A lost
    /// connection is redialled with backoff until the reactor stops.
    ///
    /// Both kinds: ``token`` is presented to a node (or NATS server) that
    /// requires one; ``tls_ca`` (a PEM file) is what a ``wss://`` node's or
    /// a NATS server's certificate must chain to (default: the system's
    /// roots). WebSocket only: ``msgpack=True`` speaks MessagePack instead
    /// of JSON. NATS only: ``namespace`` (subject prefix, default ``"pf"``),
    /// ``name`` (the connection's name on the server), ``user`` and
    /// ``password``, ``nkey_seed``, ``credentials_file`` (a ``.creds``
    /// file), ``tls_cert`` and ``tls_key`` (a client certificate),
    /// ``require_tls``, ``connect_timeout_ms`` (default 5000); and, with
    /// JetStream on the servers, ``membership`` (join the cluster's
    /// members), ``membership_heartbeat_ms`` (10 to 60000, default 1000;
    /// with ``membership`` or ``actor_store`` only) and ``actor_store``
    /// (actor state in the members' key-value bucket; implies
    /// ``membership``; connect before registering actor types).
    ///
    /// Raises ``AuthenticationError`` (PF401) when the node or server
    /// refuses the credentials, ``UnavailableError`` (PF503) if it cannot
    /// be reached or the TLS handshake fails, ``InvalidPacketError``
    /// (PF400, the message naming the argument) for a malformed URL, token
    /// or file, half of a pair, a heartbeat out of bounds, ``actor_store``
    /// on a reactor whose actor types use another store, or an option of
    /// the other kind of URL;
    /// ``TypeError`` naming the argument for a value of the wrong type.
    #[pyo3(signature = (url, **options))]
    fn connect<'py>(
        &self,
        py: Python<'py>,
        url: &Bound<'py, PyString>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bridge = bridge::current(py, "Reactor.connect()")?;
        let url = pystr::as_str(url)?.to_owned();
        let options = options::connect("connect", options)?;
        let node = self.node(py)?;
        awaitable::spawn(py, &bridge, async move { node.connect_with(&url, options).await })
    }

    /// Like :meth:`listen`, blocking the calling thread (GIL released).
    #[pyo3(signature = (addr, *, auth_file = None, tokens = None, tls_cert = None, tls_key = None))]
    fn listen_sync(
        &self,
        py: Python<'_>,
        addr: &Bound<'_, PyString>,
        auth_file: Option<&Bound<'_, PyAny>>,
        tokens: Option<&Bound<'_, PyAny>>,
        tls_cert: Option<&Bound<'_, PyAny>>,
        tls_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let addr = pystr::as_str(addr)?.to_owned();
        let options = options::listen(auth_file, tokens, tls_cert, tls_key)?;
        let node = self.node(py)?;
        let bound = blocking::wait(
            py,
            "Reactor.listen_sync()",
            "Reactor.listen()",
            Some(&self.sockets),
            async move { node.listen_with(&addr, options).await },
        )?;
        bound.map(|a| a.to_string()).map_err(|err| errors::to_pyerr(py, &err))
    }

    /// Like :meth:`connect`, blocking the calling thread (GIL released).
    #[pyo3(signature = (url, **options))]
    fn connect_sync(
        &self,
        py: Python<'_>,
        url: &Bound<'_, PyString>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let url = pystr::as_str(url)?.to_owned();
        let options = options::connect("connect_sync", options)?;
        let node = self.node(py)?;
        blocking::wait(py, "Reactor.connect_sync()", "Reactor.connect()", Some(&self.sockets), async move {
            node.connect_with(&url, options).await
        })?
        .map_err(|err| errors::to_pyerr(py, &err))
    }

    /// Stops the reactor (an awaitable): packets in flight and later
    /// submits are answered PF503; on the network, connections are closed
    /// (after sending those answers) and listeners stop. Idempotent.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bridge = bridge::current(py, "Reactor.stop()")?;
        self.core.stop();
        self.pool.stop();
        match self.existing_node() {
            Some(node) => awaitable::spawn(py, &bridge, async move {
                node.stop().await;
                Ok::<(), packetflow::PfError>(())
            }),
            None => awaitable::ready(py, &bridge, py.None().into_bound(py)),
        }
    }

    /// Stops the reactor from code without a running event loop (see
    /// :meth:`stop`); inside one, connections close in the background.
    fn stop_sync(&self, py: Python<'_>) -> PyResult<()> {
        self.core.stop();
        self.pool.stop();
        let Some(node) = self.existing_node() else { return Ok(()) };
        if bridge::running_loop(py)?.is_some() {
            crate::runtime::runtime()?.spawn(async move { node.stop().await });
            return Ok(());
        }
        blocking::wait(py, "Reactor.stop_sync()", "Reactor.stop()", Some(&self.sockets), async move {
            node.stop().await
        })
    }

    /// A snapshot of the counters: ``name``, ``in_flight``, ``queued``,
    /// ``unrouted``, ``forwards_cancelled`` (packets cancelled while
    /// forwarded to a peer); per handler (``group:element``), ``count``,
    /// ``errors``, ``cancelled`` (answered PF499 or abandoned by their
    /// submitter; counted among ``errors`` too), ``sum_us``, ``p50_us``,
    /// ``p99_us`` and ``latency_buckets``; per actor type,
    /// ``active``, ``passivated``, ``activations``, ``passivations`` and
    /// ``tells_failed``; ``routed``, packets by route (``local``,
    /// ``websocket``, ``nats``); ``nats``, the node's connection to NATS
    /// (``state``, ``server``, ``rtt_us``, ``served_keys``,
    /// ``bridged_keys``, ``requests_sent``, ``requests_served``,
    /// ``members``: the live members' node ids, sorted, or ``None`` without
    /// membership), or ``None``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = stats_dict(py, self.core.stats())?;
        Ok(out)
    }

    fn __aenter__<'py>(slf: &Bound<'py, Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bridge = bridge::current(py, "async with Reactor()")?;
        slf.get().home.adopt(&bridge);
        awaitable::ready(py, &bridge, slf.clone().into_any())
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.stop(py)
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>) -> Bound<'py, Self> {
        slf.clone()
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.stop_sync(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Reactor(name={:?}, stopped={})",
            self.core.config().name,
            if self.core.is_stopped() { "True" } else { "False" }
        )
    }
}

/// What ``Reactor.handler(group, element)`` returns: call it with a
/// function to register that function.
#[pyclass(frozen, module = "packetflow._native")]
pub(crate) struct HandlerDecorator {
    reactor: Py<PyReactor>,
    group: String,
    element: String,
}

#[pymethods]
impl HandlerDecorator {
    fn __call__<'py>(&self, py: Python<'py>, func: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let group = PyString::new(py, &self.group);
        let element = PyString::new(py, &self.element);
        self.reactor.bind(py).get().register(py, &group, &element, &func)?;
        Ok(func)
    }
}
