"""Type stubs of ``packetflow._native``, the Rust extension module.

Everything here is re-exported by ``packetflow``; import it from there.
"""

import os
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    final,
)

from typing_extensions import disjoint_base

from ._errors import PacketFlowError
from ._types import ReactorStats, TokenSpec

__version__: str

_Handler = Callable[[Any, "Context"], Any]
_H = TypeVar("_H", bound=Callable[..., Any])
_C = TypeVar("_C", bound=type)
_Method = Callable[[Any, "ActorContext"], Any]
_Path = Union[str, os.PathLike[str]]

@final
class Result:
    """The outcome of one packet.

    ``status`` is ``"success"`` (``data`` holds the handler's value) or
    ``"error"`` (``error`` holds a :class:`PacketFlowError` with its code and
    message; ``data`` is ``None``).
    """

    @property
    def packet_id(self) -> str:
        """The id of the packet this answers."""
    @property
    def status(self) -> Literal["success", "error"]:
        """``"success"`` or ``"error"``."""
    @property
    def data(self) -> Any:
        """The handler's value (``None`` on error)."""
    @property
    def error(self) -> Optional[PacketFlowError]:
        """The error, or ``None`` on success."""
    @property
    def duration_ms(self) -> int:
        """Milliseconds from acceptance to answer."""
    @property
    def ok(self) -> bool:
        """Whether the packet succeeded."""
    def unwrap(self) -> Any:
        """Returns ``data`` on success; raises ``error`` otherwise."""

@final
class ActorRef:
    """The address of an actor: its type and its id.

    ``ActorRef("counter", "c1")`` names actor ``c1`` of type ``counter``;
    the core checks both parts (:class:`InvalidPacketError`, PF400, naming
    the part that breaks its rule). :meth:`Actors.create` returns one. Two
    refs with the same type and id are equal and hash alike.
    """

    def __new__(cls, actor_type: str, id: str) -> "ActorRef": ...
    @property
    def type(self) -> str:
        """The actor's type (``"counter"``)."""
    @property
    def id(self) -> str:
        """The actor's id within its type."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@disjoint_base
class Context:
    """What a handler knows about the packet it serves.

    Handlers get it as their second argument. A child packet submitted with
    :meth:`call` (or a message sent with :meth:`send`) inherits what is
    left of the deadline, the priority and the trace id, and is cancelled
    with this packet. An actor's turn gets an :class:`ActorContext`, a
    subclass.

    A cancelled packet (see :meth:`Reactor.cancel`) is answered
    :class:`PacketCancelledError` (PF499) at once, whatever its handler
    does: an ``async def`` handler's task is cancelled
    (``asyncio.CancelledError`` at its current ``await``; it may catch it
    to clean up), a ``def`` handler polls :attr:`cancelled`.
    """

    @property
    def packet_id(self) -> str:
        """The id of the packet being handled."""
    @property
    def metadata(self) -> Optional[Dict[str, Any]]:
        """The packet's metadata (a new dict on each access), or ``None``."""
    @property
    def trace_id(self) -> str:
        """The trace id shared by this packet and its child calls."""
    @property
    def remaining_ms(self) -> int:
        """Milliseconds left before the packet's deadline (0 once passed)."""
    @property
    def priority(self) -> int:
        """The packet's priority (1-10), which its calls inherit."""
    @property
    def cancelled(self) -> bool:
        """Whether the packet's answer is no longer wanted: it was
        cancelled (its submitter gave up, :meth:`Reactor.cancel`, the
        packet that called it was cancelled, its connection went away),
        its deadline passed, or the reactor stopped. A ``def`` handler
        polls it to stop early; once true it stays true, and whatever the
        handler returns then is not its submitter's answer."""
    def call(
        self,
        group: str,
        element: str,
        data: Any = None,
        *,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
    ) -> Awaitable[Any]:
        """Submits a child packet and returns an awaitable of its data.

        The child has this packet's priority unless ``priority`` (1-10)
        names one, and all of what is left of this packet's deadline unless
        ``timeout_ms`` (1-86400000) is shorter (:class:`InvalidPacketError`,
        PF400, naming the field for a bad value). It
        is cancelled when this packet is (the call raises
        :class:`PacketCancelledError`, PF499) and when the task awaiting
        it is cancelled. Raises :class:`PacketFlowError` (the subclass of
        its code) when the child fails. For ``async def`` handlers;
        ``def`` handlers use :meth:`call_sync`.
        """
    def call_sync(
        self,
        group: str,
        element: str,
        data: Any = None,
        *,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
    ) -> Any:
        """Like :meth:`call`, blocking this thread (GIL released) until the
        child answers; for ``def`` handlers. If this packet is cancelled
        meanwhile, the child is cancelled too and this raises
        :class:`PacketCancelledError` (PF499)."""
    def send(
        self,
        actor: ActorRef,
        message: Any,
        *,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
    ) -> Awaitable[Any]:
        """Sends ``message`` to ``actor`` on behalf of this packet; an
        awaitable of the turn's answer, with :meth:`call`'s deadline, trace
        and reentrancy rules, ``priority`` and ``timeout_ms``. Raises
        :class:`PacketFlowError` if the turn fails. For ``async def``
        functions; ``def`` ones use :meth:`send_sync`."""
    def send_sync(
        self,
        actor: ActorRef,
        message: Any,
        *,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
    ) -> Any:
        """Like :meth:`send`, blocking this thread (GIL released) until the
        turn answers; for ``def`` functions."""
    def tell(
        self,
        actor: ActorRef,
        message: Any,
        *,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
    ) -> None:
        """Sends ``message`` to ``actor`` without waiting for its turn: the
        message has its place in the actor's mailbox when this returns,
        in the order of its ``priority`` (this packet's unless named);
        ``timeout_ms`` bounds how long it may wait there. Raises at once
        for a message the core refuses (PF400 naming a bad option)."""

@final
class ActorContext(Context):
    """What an actor's turn knows: the :class:`Context` of its message, the
    actor it runs for, and the actor's state.

    ``state`` is the actor's state for this turn: read it, change it in
    place, or replace it. It becomes the actor's state only if the method
    returns normally; an exception (or the deadline passing) leaves the
    actor's state as it was.
    """

    @property
    def actor(self) -> ActorRef:
        """The actor this turn runs for."""
    @property
    def state(self) -> Any:
        """The actor's state during this turn."""
    @state.setter
    def state(self, value: Any) -> None: ...
    def stop(self) -> None:
        """Stops the actor once this turn returns: its reply is sent, then
        the actor and its state are deleted. No effect if the turn fails."""

@final
class Actors:
    """The actors of a reactor (:attr:`Reactor.actors`): register actor
    types, create, message, stop and list actors.

    An actor is a (type, id) with a JSON state; it handles one message at a
    time, and a turn that raises leaves its state as it was. Each awaitable
    method has a ``_sync`` twin that blocks the calling thread (with the GIL
    released), for code without a running event loop.
    """

    def register_behavior(
        self,
        name: str,
        behavior: Union[type, Mapping[str, _Method]],
        *,
        initial_state: Any = None,
    ) -> None:
        """Registers (or replaces) actor type ``name`` on this reactor.

        ``behavior`` is a class whose public methods ``(self, message,
        ctx)`` handle the message types of the same names (``self.state``
        is the actor's state; an instance is made for each turn, without
        calling ``__init__``), or a mapping of message types to functions
        ``(message, ctx)`` (``ctx.state`` is the state). ``message`` is the
        whole message dict; the return value is the answer. Methods may be
        ``def`` (run on a handler thread) or ``async def`` (run on the event
        loop running now; registered outside a loop, on the reactor's home
        loop: the first loop that used it, while that loop runs).
        ``initial_state`` (or the class attribute of that name), when not
        ``None``, makes the actors virtual: a message for an id that does
        not exist creates it with a copy of that state. Raises
        :class:`InvalidPacketError` for a bad type name and ``TypeError``
        for a behaviour of the wrong shape.
        """
    def create(
        self,
        actor_type: str,
        state: Any = None,
        *,
        id: Optional[str] = None,
        packet_id: Optional[str] = None,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> Awaitable[ActorRef]:
        """Creates an actor of ``actor_type`` with ``state`` (any JSON
        value); an awaitable of its :class:`ActorRef`. ``id`` names it (a
        fresh UUID when left out); :class:`DuplicatePacketError` (PF409) if
        it exists."""
    def create_sync(
        self,
        actor_type: str,
        state: Any = None,
        *,
        id: Optional[str] = None,
        packet_id: Optional[str] = None,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> ActorRef:
        """Like :meth:`create`, blocking the calling thread (GIL released)."""
    def send(
        self,
        actor: ActorRef,
        message: Any,
        *,
        packet_id: Optional[str] = None,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> Awaitable[Any]:
        """Sends ``message`` (a dict whose ``"type"`` names the method) to
        ``actor``; an awaitable of the turn's answer.

        A failed turn raises :class:`PacketFlowError` (the subclass of its
        code): :class:`ActorNotFoundError` (PF404) for an actor that does
        not exist and is not virtual, :class:`HandlerError` (PF500) for a
        method that raised, :class:`PacketTimeoutError` (PF408) past the
        deadline. Re-sending with the same ``packet_id`` is answered from
        memory without running again (within the last
        ``actor_remembered_turns`` turns), so a caller may retry.
        """
    def send_sync(
        self,
        actor: ActorRef,
        message: Any,
        *,
        packet_id: Optional[str] = None,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> Any:
        """Like :meth:`send`, blocking the calling thread (GIL released)."""
    def tell(
        self,
        actor: ActorRef,
        message: Any,
        *,
        packet_id: Optional[str] = None,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> None:
        """Sends ``message`` to ``actor`` without waiting for its turn. The
        message has its place in the actor's mailbox when this returns, so
        tells from one sender keep their order; a failed turn is counted in
        the type's ``tells_failed``. Raises at once for a message the core
        refuses."""
    def stop(self, actor: ActorRef) -> Awaitable[None]:
        """Stops ``actor`` after the messages queued before this, and
        deletes its state. :class:`ActorNotFoundError` (PF404) if it does
        not exist."""
    def stop_sync(self, actor: ActorRef) -> None:
        """Like :meth:`stop`, blocking the calling thread (GIL released)."""
    def list(self, actor_type: str) -> Awaitable[List[str]]:
        """The ids of the actors of ``actor_type`` this reactor hosts, in
        memory or in its store, sorted. :class:`ActorNotFoundError` (PF404)
        if the type is not registered here."""
    def list_sync(self, actor_type: str) -> List[str]:
        """Like :meth:`list`, blocking the calling thread (GIL released)."""
    def count(self, actor_type: str) -> Awaitable[int]:
        """How many actors of ``actor_type`` this reactor hosts."""
    def count_sync(self, actor_type: str) -> int:
        """Like :meth:`count`, blocking the calling thread (GIL released)."""
    def passivate_idle(self) -> Awaitable[int]:
        """Passivates now every actor idle for longer than the reactor's
        ``actor_passivate_after_ms`` (a sweep also runs on its own every
        quarter of that time); an awaitable of how many left memory."""

@final
class ActorDecorator:
    """What :meth:`Reactor.actor` returns: applied to a class, it registers
    that class as an actor type's behaviour and returns it unchanged."""

    def __call__(self, behavior: _C) -> _C:
        """Registers ``behavior`` and returns it."""

@final
class HandlerDecorator:
    """What :meth:`Reactor.handler` returns: applied to a function, it
    registers that function and returns it unchanged."""

    def __call__(self, fn: _H) -> _H:
        """Registers ``fn`` and returns it."""

@final
class Reactor:
    """Registers handlers and routes packets to them.

    ``async with Reactor() as r:`` (or ``with``) stops it on exit.
    ``submit``/``call`` are awaitables for code inside an asyncio event
    loop; ``submit_sync``/``call_sync`` block the calling thread (with the
    GIL released) for code without one. A reactor that is garbage-collected
    stops like :meth:`stop`.
    """

    def __new__(
        cls,
        name: str = "packetflow",
        *,
        max_inflight: Optional[int] = None,
        max_queue: Optional[int] = None,
        finished_memory: Optional[int] = None,
        handler_threads: int = 8,
        busy_poll_us: Optional[int] = None,
        actor_store: Optional[_Path] = None,
        actor_passivate_after_ms: Optional[int] = None,
        actor_remembered_turns: Optional[int] = None,
        sockets: Optional[Literal["loop", "thread"]] = None,
        stdlib: Optional[str] = None,
    ) -> "Reactor":
        """Creates a reactor.

        ``max_inflight``: most handlers running at once; ``max_queue``:
        most packets waiting for a slot, past which submits get PF429;
        ``finished_memory``: how many finished ids are remembered for late
        dependents; ``handler_threads``: most threads running ``def``
        handlers; ``busy_poll_us``: microseconds to keep polling the
        network, instead of sleeping, after frames arrive (while at most 8
        packets are in flight; docs/latency.md): lower latency where waking
        a thread is slow, as on virtual machines, for up to a core spinning
        while traffic is sparse (0: off). ``actor_store``: a file (a redb
        database, created if absent) keeping the actors' state, each turn
        written before its answer leaves so that it survives ``kill -9``
        (default: memory); one process holds a store file at a time.
        ``actor_passivate_after_ms``: how long an actor stays in memory
        without a message (default 10 minutes); ``actor_remembered_turns``:
        how many answered packet ids each actor remembers, the window in
        which a repeated packet is answered from memory (default 32).
        ``sockets``: where the network connections run. By default
        (``None``) on the event loop running at the first ``listen`` /
        ``connect``, its selector watching their sockets, so a frame is
        read, handed to its ``async def`` handler and answered on the
        loop's thread with no other thread waking (the fewest wake-ups per
        round trip); but on the runtime's threads when no loop runs then,
        on a loop that cannot watch sockets (the Windows proactor), with
        ``busy_poll_us``, once that loop is closed, and from the first call
        of one of the reactor's ``_sync`` methods on (a blocking caller
        waits less for a connection there). ``"loop"``: on the loop even
        when ``_sync`` methods are called from other threads.
        ``"thread"``: always on the runtime's threads, which read and write
        while Python runs: for a loop that is held for long (a connection
        it drives is silent meanwhile, and peers drop it after 3 heartbeat
        intervals, 3 s). ``"loop"`` with ``busy_poll_us`` is a
        ``ValueError``. docs/bindings.md tells what was measured.
        ``stdlib``: the standard elements this reactor hosts
        (docs/stdlib.md), as comma-separated keys and patterns:
        ``"cf:*,co:gather"``, ``"*"`` for all (default: none). Each serves
        its key only while no handler of that key is registered here and no
        peer announced one; they are not announced to peers. A pattern
        matching no standard element is :class:`InvalidPacketError`
        (PF400) naming it.
        Options left out take the core's defaults (``ReactorConfig``,
        ``NodeConfig``; busy polling is off); the core checks the values:
        :class:`InvalidPacketError` (PF400) names a bad one (or a store
        file that cannot be opened).
        """
    @property
    def name(self) -> str:
        """The reactor's name."""
    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
    def register(self, group: str, element: str, fn: _Handler) -> None:
        """Registers (or replaces) the handler of ``group:element``.

        ``fn(data, ctx)`` is a ``def`` function (run on a handler thread,
        off the event loop) or an ``async def`` function (run on the event
        loop running when it is registered; if none runs, on the loop that
        submits the packet), each call in an asyncio task of its own. Every
        call runs in a fresh ``contextvars.Context``, as it would behind a
        network hop. Its return value is the result's data; an
        exception fails the packet with PF500 (or with the code of a raised
        :class:`PacketFlowError`). When the packet is cancelled (PF499),
        an ``async def`` handler's task is cancelled and a ``def`` handler
        sees :attr:`Context.cancelled` turn true; a handler task cancelled
        by anything else fails its packet with PF500. Raises :class:`InvalidPacketError` for a
        bad group or element and ``TypeError`` if ``fn`` is not callable.
        """
    def handler(self, group: str, element: str) -> HandlerDecorator:
        """Decorator form of :meth:`register`; returns the function unchanged."""
    @property
    def actors(self) -> Actors:
        """The actors of this reactor (see :class:`Actors`)."""
    def actor(self, name: str) -> ActorDecorator:
        """Class decorator: registers the class as the behaviour of actor
        type ``name`` (see :meth:`Actors.register_behavior`) and returns it
        unchanged."""
    def unregister(self, group: str, element: str) -> bool:
        """Removes the handler of ``group:element``; ``False`` if there was none."""
    def submit(
        self,
        group: str,
        element: str,
        data: Any = None,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        dependencies: Optional[Sequence[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        packet_id: Optional[str] = None,
    ) -> Awaitable[Result]:
        """Submits a packet; an awaitable of its :class:`Result`.

        Every packet gets exactly one answer: the handler's value or an
        error result (PF001 no handler, PF408 deadline, PF409 duplicate id,
        PF424 failed dependency, PF429 queue full, PF499 cancelled, PF500
        handler failure, PF503 stopped). Cancelling the task that awaits
        it cancels the packet (the awaiting code gets
        ``asyncio.CancelledError``; the handler is told as
        :meth:`cancel` tells it). ``priority`` (1-10) and ``timeout_ms`` (1-86400000)
        left out or ``None`` take the protocol's defaults; ``dependencies``
        is a list (or tuple) of packet ids. Bad arguments raise at once:
        :class:`InvalidPacketError` (PF400) from the core for a bad group,
        element, priority, timeout, id, dependency or metadata, in the
        words a peer sending it in a frame gets (the message names the
        field); ``TypeError`` or ``ValueError`` naming the spot for
        ``data`` or ``metadata`` JSON cannot carry.
        """
    def call(
        self,
        group: str,
        element: str,
        data: Any = None,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        dependencies: Optional[Sequence[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        packet_id: Optional[str] = None,
    ) -> Awaitable[Any]:
        """Submits a packet; an awaitable of its data. A failed packet
        raises :class:`PacketFlowError` (the subclass of its code)."""
    def submit_sync(
        self,
        group: str,
        element: str,
        data: Any = None,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        dependencies: Optional[Sequence[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        packet_id: Optional[str] = None,
    ) -> Result:
        """Like :meth:`submit`, blocking the calling thread (GIL released);
        for code without a running event loop (raises ``RuntimeError``
        inside one). Ctrl-C in the main thread (or any exception a signal
        handler raises there, within 50 ms) cancels the packet and is
        raised; a packet cancelled by :meth:`cancel` from another thread
        returns its PF499 result. The packet's ``timeout_ms`` bounds the
        wait."""
    def call_sync(
        self,
        group: str,
        element: str,
        data: Any = None,
        priority: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        dependencies: Optional[Sequence[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        packet_id: Optional[str] = None,
    ) -> Any:
        """Like :meth:`call`, blocking the calling thread (GIL released);
        for code without a running event loop. Ctrl-C and :meth:`cancel`
        as for :meth:`submit_sync` (a cancelled packet raises
        :class:`PacketCancelledError`)."""
    def cancel(self, packet_id: str) -> bool:
        """Cancels the packet ``packet_id`` in flight on this reactor,
        whoever submitted it (any task or thread here, or a peer).

        Returns ``True`` if it is in flight (cancelled now, or already:
        cancelling is idempotent), ``False`` if not (answered already, or
        unknown; nothing is remembered for a later submit). The packet is
        answered at once with :class:`PacketCancelledError` (PF499): a
        handler not started never starts, an ``async def`` handler's task
        is cancelled, a ``def`` handler sees :attr:`Context.cancelled`
        turn true; its ``ctx.call`` children are cancelled with it (here
        and on peers), and packets depending on it fail with PF424.
        :class:`InvalidPacketError` (PF400) for an id no packet can have
        (empty, or over 128 bytes). To cancel a packet you await, cancel
        the awaiting task instead.
        """
    def listen(
        self,
        addr: str,
        *,
        auth_file: Optional[_Path] = None,
        tokens: Optional[Sequence[TokenSpec]] = None,
        tls_cert: Optional[_Path] = None,
        tls_key: Optional[_Path] = None,
    ) -> Awaitable[str]:
        """Accepts peers on ``addr`` (``"HOST:PORT"``; port 0 picks a free
        one); an awaitable of the address bound (``"HOST:PORT"``).

        Peers connect to ``ws://HOST:PORT/packetflow/v1`` (``wss://`` with
        TLS); ``GET /health`` and ``GET /metrics`` are served on the same
        port.

        ``auth_file`` (a tokens file, ``.toml`` or ``.json``) and/or
        ``tokens`` (a list of :class:`TokenSpec` dicts, added to the file's)
        turn auth on: every peer must present one of the tokens, and may
        only submit and serve what its token allows. ``tls_cert`` (a PEM
        chain, leaf first) and ``tls_key`` (its PEM key), both or neither,
        make the listener speak ``wss://`` only. Files are read here.

        Raises :class:`UnavailableError` (PF503) if the address cannot be
        bound, :class:`InvalidPacketError` (PF400) for a bad tokens file,
        token list or TLS file (the core judges ``tokens`` as it judges a
        tokens file; the message names the entry and field, never a token),
        ``TypeError`` naming the argument for a path of the wrong type or a
        ``tokens`` value JSON cannot carry.
        """
    def connect(
        self,
        url: str,
        *,
        msgpack: bool = False,
        token: Optional[str] = None,
        tls_ca: Optional[_Path] = None,
        namespace: Optional[str] = None,
        name: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        nkey_seed: Optional[str] = None,
        credentials_file: Optional[_Path] = None,
        tls_cert: Optional[_Path] = None,
        tls_key: Optional[_Path] = None,
        require_tls: bool = False,
        connect_timeout_ms: Optional[int] = None,
        membership: bool = False,
        membership_heartbeat_ms: Optional[int] = None,
        actor_store: bool = False,
    ) -> Awaitable[None]:
        """Dials a peer (``"ws://HOST:PORT/packetflow/v1"``, or ``wss://``),
        or joins a NATS system (``"nats://HOST:PORT"`` or ``tls://``,
        several servers separated by commas).

        Resolves once the connection is up and the peer's handlers are
        known (on NATS: once this reactor's handlers are subscribed on the
        server); packets with no local handler are then routed to peers,
        then over NATS. A lost connection is redialled with backoff until
        the reactor stops.

        For both kinds of URL: ``token`` is presented to a node (or NATS
        server) that requires one (in the clear over ``ws://``: use
        ``wss://`` beyond loopback). ``tls_ca`` is a PEM file of the
        authorities a ``wss://`` node's or a NATS server's certificate must
        chain to (default: the system's roots).

        WebSocket only: ``msgpack=True`` speaks MessagePack on this
        connection instead of JSON; the same values cross either way.

        NATS only (docs/protocol.md, "NATS"): ``namespace`` (the subjects'
        prefix, default ``"pf"``: systems with different namespaces share a
        server without seeing each other), ``name`` (the connection's name
        on the server), ``user`` and ``password`` (both or neither; or in
        the URL), ``nkey_seed``, ``credentials_file`` (a ``.creds`` file),
        ``tls_cert`` and ``tls_key`` (a client certificate, both or
        neither), ``require_tls``, ``connect_timeout_ms`` (per server,
        default 5000). :meth:`stats` shows the connection under ``nats``.

        The cluster, NATS only, with JetStream on the servers
        (docs/protocol.md, "Membership"): ``membership=True`` joins the
        cluster's members (an entry in the bucket ``<namespace>_members``;
        route keys and actors are then placed over the live members);
        ``membership_heartbeat_ms`` (10 to 60000, default 1000; given only
        with ``membership`` or ``actor_store``) is its heartbeat when this
        reactor makes the bucket, a dead member leaving every view within
        three of them. ``actor_store=True`` keeps actor state in the
        members' bucket ``<namespace>_actors``, so that an actor whose
        reactor stopped or died comes back on another member with its
        state; it implies ``membership``, and must come before the first
        actor type is registered (a reactor made with a file
        ``actor_store``, or with actor types already registered, is
        PF400). A listening reactor's ``GET /health`` lists the live
        members under ``nats.membership``.

        Raises :class:`AuthenticationError` (PF401) when the node or server
        refuses the credentials, :class:`UnavailableError` (PF503) if it
        cannot be reached or the TLS handshake fails,
        :class:`InvalidPacketError` (PF400, the message naming the
        argument) for a malformed URL, token or file, half of a pair, a
        bad namespace, ``connect_timeout_ms=0``, a heartbeat out of bounds
        or without ``membership``, ``actor_store`` on a reactor whose actor
        types use another store, or an option of the other kind of URL; ``TypeError`` naming the argument for a value of the
        wrong type.
        """
    def listen_sync(
        self,
        addr: str,
        *,
        auth_file: Optional[_Path] = None,
        tokens: Optional[Sequence[TokenSpec]] = None,
        tls_cert: Optional[_Path] = None,
        tls_key: Optional[_Path] = None,
    ) -> str:
        """Like :meth:`listen`, blocking the calling thread (GIL released)."""
    def connect_sync(
        self,
        url: str,
        *,
        msgpack: bool = False,
        token: Optional[str] = None,
        tls_ca: Optional[_Path] = None,
        namespace: Optional[str] = None,
        name: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        nkey_seed: Optional[str] = None,
        credentials_file: Optional[_Path] = None,
        tls_cert: Optional[_Path] = None,
        tls_key: Optional[_Path] = None,
        require_tls: bool = False,
        connect_timeout_ms: Optional[int] = None,
        membership: bool = False,
        membership_heartbeat_ms: Optional[int] = None,
        actor_store: bool = False,
    ) -> None:
        """Like :meth:`connect`, blocking the calling thread (GIL released)."""
    def stop(self) -> Awaitable[None]:
        """Stops the reactor: packets in flight and later submits are
        answered PF503; connections are closed after sending those answers
        and listeners stop. Idempotent."""
    def stop_sync(self) -> None:
        """Stops the reactor from code without a running event loop (see
        :meth:`stop`); called inside one, connections close in the
        background."""
    def stats(self) -> ReactorStats:
        """A snapshot of the counters (see :class:`ReactorStats`)."""
    def __aenter__(self) -> Awaitable["Reactor"]:
        """``async with Reactor() as r``: the reactor itself."""
    def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Awaitable[None]:
        """Stops the reactor on leaving ``async with``."""
    def __enter__(self) -> "Reactor":
        """``with Reactor() as r``: the reactor itself."""
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Stops the reactor on leaving ``with``."""

def error_codes() -> List[Tuple[str, str]]:
    """The protocol's error codes as the core lists them, each with its
    one-line description: ``[("PF001", "no handler for ..."), ...]``."""

def _socket_stats() -> Dict[str, int]:
    """Counters of the loop-driven sockets since the process started
    (``watches``, ``read_waits``, ``write_waits``, ``registered``,
    ``removed``, ``callbacks``, ``on_runtime``) and ``cross_thread_wakes``,
    the wake-ups of loops written by other threads; for tests and
    benchmarks."""

def _shutdown() -> None:
    """Called at interpreter exit: background threads stop using Python."""
