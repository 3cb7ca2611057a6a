defmodule PacketFlow.Actors do
  @moduledoc """
  Stateful actors on a reactor: register a type (a `PacketFlow.Actor`
  module), then create actors, message them, stop them and list them.

      :ok = PacketFlow.Actors.register(reactor, "counter", MyApp.Counter)
      {:ok, counter} = PacketFlow.Actors.create(reactor, "counter", %{value: 0})
      {:ok, %{"value" => 1}} = PacketFlow.Actors.send(reactor, counter, %{type: "increment"})
      {:ok, %{"value" => 1}} = PacketFlow.Actors.send(reactor, counter, %{type: "get_value"})
      :ok = PacketFlow.Actors.stop(reactor, counter)

  An actor is a type and an id with a JSON state; each handles one message
  at a time, and a turn that fails leaves its state as it was (see
  `PacketFlow.Actor`). A message is a map whose `:type` (or `"type"`) names
  what is asked; the whole map is what `handle_message` gets.

  Every function here runs in the calling process, as
  `PacketFlow.Reactor.submit/2` does (never through the reactor's
  GenServer, except `register/3`), and a message is cancelled like any
  packet: `PacketFlow.Reactor.cancel/2` with its `:id`, or the sending
  process ending while it waits (see "Cancellation" in
  `PacketFlow.Actor`). An actor message is an ordinary packet
  to `rm:actor.<type>` (docs/protocol.md, "Actors"): an actor registered
  here is reachable from any node the reactor is connected to, in any
  language, and `send/4` reaches an actor hosted by a peer.

  ## Effectively once

  Each actor remembers the packet ids and answers of its recent turns
  (the reactor's `:actor_remembered_turns`, 32 by default): a message sent
  again with the same `:id` (after PF408, PF503 or a lost connection) is
  answered from memory instead of running again, also after a restart
  when the reactor has an `:actor_store`. Giving each message an id of
  your own makes a retry safe:

      {:ok, reply} = PacketFlow.Actors.send(reactor, counter, %{type: "increment"}, id: "order-42")

  ## Errors

  Failures are `{:error, %PacketFlow.Error{}}`: PF404 for an actor that
  does not exist (unless its type has an `initial_state/0`), PF409 for a
  create whose id exists, PF400 for a bad id, type, message or option
  (naming it), PF500 for a turn that failed, PF408 when the deadline
  passed, PF499 when the message was cancelled, PF503 when the reactor
  stopped. Values that cannot cross as JSON
  and options that do not exist raise `ArgumentError`.
  """

  alias PacketFlow.{Actor, ActorRef, Native, Reactor}

  @typedoc "A message: a map whose `:type` names what is asked, as a string or an atom."
  @type message :: %{
          required(:type | String.t()) => String.t() | atom(),
          optional(any()) => any()
        }

  @typedoc """
  Options of a message (`send/4`, `tell/4`, `stop/3`), each checked by the
  core:

  * `:id` - the packet id (default: a fresh UUID). A message repeated with
    the same id is applied once.
  * `:priority` - 1-10 (10 most urgent; default 5): the actor's mailbox
    serves higher priorities first.
  * `:timeout_ms` - the deadline (default 30 000), waiting in the mailbox
    included.
  * `:metadata` - a map of JSON values sent with the message.
  """
  @type message_option ::
          {:id, String.t()}
          | {:priority, 1..10}
          | {:timeout_ms, pos_integer()}
          | {:metadata, %{optional(String.t() | atom()) => PacketFlow.value()}}

  @typedoc """
  Options of `create/4`: `:id` is the new actor's id (default: a fresh
  UUID); `:priority`, `:timeout_ms` and `:metadata` are those of the
  create's packet (see `t:message_option/0`).
  """
  @type create_option ::
          {:id, String.t()}
          | {:priority, 1..10}
          | {:timeout_ms, pos_integer()}
          | {:metadata, %{optional(String.t() | atom()) => PacketFlow.value()}}

  @message_options [:id, :priority, :timeout_ms, :metadata]
  @query_timeout_ms 30_000

  @doc """
  Registers `module` (a `PacketFlow.Actor`) as actor type `type` on the
  reactor, replacing any type of that name. Messages to `rm:actor.<type>`
  are served here from then on, whoever sends them.

  Returns `{:error, %PacketFlow.Error{code: "PF400"}}` for a type name the
  core refuses (1-58 characters of `[A-Za-z0-9_.-]`). Raises
  `ArgumentError` when `module` is not an actor type, or its
  `initial_state/0` is not a JSON value.
  """
  @spec register(Reactor.t(), PacketFlow.name(), module()) :: :ok | {:error, PacketFlow.Error.t()}
  def register(reactor, type, module) do
    code = Actor.code!(module)
    {:actor, module, _arity} = code
    type = PacketFlow.name!(type, "actor type")

    initial =
      if function_exported?(module, :initial_state, 0),
        do: {:ok, module.initial_state()},
        else: :error

    types =
      if function_exported?(module, :message_types, 0),
        do: message_types!(module),
        else: nil

    case GenServer.call(reactor, {:register_actor, type, code, initial, types}) do
      {:badarg, message} -> raise ArgumentError, "#{inspect(module)}: #{message}"
      answer -> answer
    end
  end

  defp message_types!(module) do
    case module.message_types() do
      types when is_list(types) ->
        Enum.map(types, &PacketFlow.name!(&1, "#{inspect(module)}.message_types/0's item"))

      other ->
        raise ArgumentError,
              "#{inspect(module)}.message_types/0 must return a list of strings, got: #{inspect(other)}"
    end
  end

  @doc """
  Creates an actor of `type` with `state` and returns its address. See
  `t:create_option/0`; without `:id` the actor gets a fresh UUID.

  PF409 if an actor with that id exists; PF001 if no node the reactor
  reaches hosts `type`.
  """
  @spec create(Reactor.t(), PacketFlow.name(), PacketFlow.value(), [create_option()]) ::
          {:ok, ActorRef.t()} | {:error, PacketFlow.Error.t()}
  def create(reactor, type, state \\ nil, opts \\ []) do
    opts = Keyword.validate!(opts, @message_options)
    {id, opts} = Keyword.pop(opts, :id)
    type = PacketFlow.name!(type, "actor type")

    if not (is_binary(id) or is_nil(id)),
      do: raise(ArgumentError, "id must be a string, got: #{inspect(id)}")

    case ask(reactor, :create, type, id, fields(state, opts), :create) do
      {:ok, %{"type" => type, "id" => id}} -> {:ok, %ActorRef{type: type, id: id}}
      {:error, _} = refused -> refused
    end
  end

  @doc """
  Sends `message` to `actor` and waits for the turn's reply (`nil` for
  `{:noreply, state}`). See `t:message_option/0`.
  """
  @spec send(Reactor.t(), ActorRef.t(), message(), [message_option()]) ::
          {:ok, PacketFlow.value()} | {:error, PacketFlow.Error.t()}
  def send(reactor, %ActorRef{} = actor, message, opts \\ []) do
    {type, id} = ActorRef.parts!(actor)
    opts = Keyword.validate!(opts, @message_options)
    ask(reactor, :send, type, id, fields(message, opts), :send)
  end

  @doc """
  Sends `message` to `actor` without waiting for its turn. Returns `:ok` once
  the message holds its place in the actor's mailbox, so the tells of one
  process are handled in the order it made them. A turn that fails is
  counted in `stats/1`'s `tells_failed`; what the core refuses at once (a
  bad id or option) is `{:error, %PacketFlow.Error{}}`.
  """
  @spec tell(Reactor.t(), ActorRef.t(), message(), [message_option()]) ::
          :ok | {:error, PacketFlow.Error.t()}
  def tell(reactor, %ActorRef{} = actor, message, opts \\ []) do
    {type, id} = ActorRef.parts!(actor)
    opts = Keyword.validate!(opts, @message_options)

    case Native.actor_tell(GenServer.whereis(reactor), type, id, fields(message, opts)) do
      {:badarg, message} -> raise ArgumentError, message
      :noproc -> exit({:noproc, {__MODULE__, :tell, [reactor, actor]}})
      told -> told
    end
  end

  @doc """
  Stops `actor` once the messages before this one are handled, and deletes
  its state. PF404 if it does not exist.
  """
  @spec stop(Reactor.t(), ActorRef.t(), [message_option()]) ::
          :ok | {:error, PacketFlow.Error.t()}
  def stop(reactor, %ActorRef{} = actor, opts \\ []) do
    {type, id} = ActorRef.parts!(actor)
    opts = Keyword.validate!(opts, @message_options)

    case ask(reactor, :stop, type, id, fields(nil, opts), :stop) do
      {:ok, _} -> :ok
      {:error, _} = refused -> refused
    end
  end

  @doc """
  The ids of the actors of `type` this reactor hosts, in memory or in its
  store, sorted. PF404 if the type is not registered here.
  """
  @spec list(Reactor.t(), PacketFlow.name()) ::
          {:ok, [String.t()]} | {:error, PacketFlow.Error.t()}
  def list(reactor, type), do: query(reactor, :list, type)

  @doc "How many actors of `type` this reactor hosts (see `list/2`)."
  @spec count(Reactor.t(), PacketFlow.name()) ::
          {:ok, non_neg_integer()} | {:error, PacketFlow.Error.t()}
  def count(reactor, type), do: query(reactor, :count, type)

  defp query(reactor, what, type) do
    type = PacketFlow.name!(type, "actor type")
    tag = make_ref()

    case Native.actor_query(GenServer.whereis(reactor), what, type, tag) do
      {:done, answer} ->
        answer

      # Reading a store is quick; the bound only guards against a runtime
      # that failed to answer.
      :pending ->
        Reactor.await_native(tag, @query_timeout_ms, {__MODULE__, what, [reactor, type]})

      :noproc ->
        exit({:noproc, {__MODULE__, what, [reactor, type]}})
    end
  end

  # Asks `op` of the actor for the calling process (the core decides whether
  # it travels as a packet) and waits for `{:ok, data}` or
  # `{:error, %PacketFlow.Error{}}`.
  defp ask(reactor, op, type, id, fields, caller) do
    tag = make_ref()

    case Native.actor_submit(
           GenServer.whereis(reactor),
           op,
           type,
           id,
           fields,
           tag,
           Reactor.submitter()
         ) do
      {:pending, timeout_ms} ->
        Reactor.await_native(tag, timeout_ms, {__MODULE__, caller, [reactor, type, id]})

      {:done, result} ->
        result

      {:badarg, message} ->
        raise ArgumentError, message

      :noproc ->
        exit({:noproc, {__MODULE__, caller, [reactor, type, id]}})
    end
  end

  defp fields(data, []), do: %{data: data}
  defp fields(data, opts), do: opts |> Map.new() |> Map.put(:data, data)
end
