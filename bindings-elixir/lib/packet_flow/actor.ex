defmodule PacketFlow.Actor do
  @moduledoc """
  The behaviour of an actor type: a module whose `handle_message/3` runs
  one message at a time against the actor's state.

      defmodule MyApp.Counter do
        use PacketFlow.Actor

        @impl true
        def initial_state, do: %{"value" => 0}

        @impl true
        def handle_message("increment", message, %{"value" => value} = state) do
          value = value + Map.get(message, "by", 1)
          {:reply, %{value: value}, %{state | "value" => value}}
        end

        def handle_message("get_value", _message, state) do
          {:reply, %{value: state["value"]}, state}
        end

        def handle_message("reset", _message, _state), do: {:stop, "reset", nil}
      end

      :ok = PacketFlow.Actors.register(reactor, "counter", MyApp.Counter)
      {:ok, counter} = PacketFlow.Actors.create(reactor, "counter", %{value: 0})
      {:ok, %{"value" => 1}} = PacketFlow.Actors.send(reactor, counter, %{type: "increment"})

  ## A turn

  `handle_message(type, message, state)` gets the message's `"type"`, the
  whole message (a map with string keys, `"type"` included) and the
  actor's state, and returns one of:

  * `{:reply, reply, new_state}` - answers `reply`; `new_state` becomes the
    actor's state;
  * `{:noreply, new_state}` - answers `nil`;
  * `{:stop, reply, state}` - answers `reply`, then stops the actor and
    deletes its state.

  A turn is transactional: if `handle_message` raises, throws or exits,
  returns anything else, or outlives the message's deadline, the sender
  gets PF500 (PF408 for the deadline) and the actor keeps exactly the state
  it had before the turn. An actor runs one turn at a time; its other
  messages wait in its mailbox (highest priority first, then in arrival
  order).

  State, messages and replies are JSON values (see `PacketFlow`): a state
  returned as `%{value: 1}` comes back to the next turn as
  `%{"value" => 1}`. With a durable store (the reactor's `:actor_store`
  option), the state is on disk before the reply leaves.

  Turns run in the reactor's pool of worker processes, as handlers do: a
  turn may block, make calls, or wait for messages without holding up
  other actors. To call handlers or message other actors on behalf of the
  message (its deadline, trace and reentrancy chain carried along),
  define `handle_message(type, message, ctx, state)` instead: it is called
  with a `PacketFlow.Context` whose `:actor` is this actor's address, for
  `PacketFlow.Context.call/5`, `PacketFlow.Context.send/4` and
  `PacketFlow.Context.tell/4`. A message that comes back to this actor
  through such a call while the turn waits runs at once on the state
  before the turn; it may read it but not change it (PF409 if it does).
  See docs/protocol.md, "Actors".

  ## Cancellation

  A turn is a handler call: when the core drops it before it answers (its
  message cancelled with `PacketFlow.Reactor.cancel/2`, its sender gone,
  its deadline passed), the worker running `handle_message` is sent
  `{:packetflow_cancelled, packet_id}` and `PacketFlow.Context.cancelled?/1`
  turns true, as for a handler (see "Cancellation" in
  `PacketFlow.Context`); the turn's answer is dropped and the actor keeps
  the state it had. `handle_message/3` has no context: it may match
  `{:packetflow_cancelled, _}`, since a worker only ever gets the notice of
  the call it runs.

  The core drops a cancelled message's turn when it runs for its sender
  (the actor was idle, over the default in-memory store). A turn the
  actor's mailbox runs (the actor was busy when the message came, or its
  store is durable) is not dropped: its sender is answered PF499 at once,
  and the turn runs to its end. A message cancelled while it waits in the
  mailbox never runs.

  ## Optional callbacks

  * `initial_state/0` - the state of an actor that receives a message
    before it was created: with it, any id names an actor that comes to
    life on its first message (a virtual actor); without it, such a
    message is answered PF404. Called once, when the type is registered.
  * `message_types/0` - the message types the actor understands: any
    other is refused with PF400 naming these, before a turn runs. Without
    it, every message reaches `handle_message`, where an unmatched type is
    a `FunctionClauseError` (PF500).
  """

  alias PacketFlow.Context

  @typedoc "An actor's state: a JSON value."
  @type state :: PacketFlow.value()

  @typedoc "What a turn returns."
  @type turn ::
          {:reply, PacketFlow.value(), state()}
          | {:noreply, state()}
          | {:stop, PacketFlow.value(), state()}

  @doc """
  Handles one message: `type` is the message's `"type"`, `message` the whole
  message. Define this one or `handle_message/4`.
  """
  @callback handle_message(type :: String.t(), message :: map(), state :: state()) :: turn()

  @doc """
  `handle_message/3` with the turn's context, for calls and messages made
  on behalf of the message. Called instead of `handle_message/3` when
  defined.
  """
  @callback handle_message(
              type :: String.t(),
              message :: map(),
              ctx :: Context.t(),
              state :: state()
            ) :: turn()

  @doc "The state of an actor that starts on its first message (a virtual actor)."
  @callback initial_state() :: state()

  @doc "The message types this actor type understands; others are refused with PF400."
  @callback message_types() :: [String.t() | atom()]

  @optional_callbacks handle_message: 3, handle_message: 4, initial_state: 0, message_types: 0

  @doc false
  defmacro __using__(_opts) do
    quote do
      @behaviour PacketFlow.Actor
      @before_compile PacketFlow.Actor
    end
  end

  @doc false
  defmacro __before_compile__(env) do
    unless Module.defines?(env.module, {:handle_message, 3}) or
             Module.defines?(env.module, {:handle_message, 4}) do
      raise CompileError,
        file: env.file,
        line: env.line,
        description:
          "#{inspect(env.module)} uses PacketFlow.Actor but defines neither " <>
            "handle_message/3 nor handle_message/4"
    end
  end

  @typedoc false
  @type code :: {:actor, module(), 3 | 4}

  @doc false
  # What the reactor's workers run for a registered module: its
  # handle_message and the arity it is called with. Raises ArgumentError
  # for a module that is not an actor type.
  @spec code!(module()) :: code()
  def code!(module) when is_atom(module) do
    Code.ensure_loaded(module)

    cond do
      function_exported?(module, :handle_message, 4) ->
        {:actor, module, 4}

      function_exported?(module, :handle_message, 3) ->
        {:actor, module, 3}

      true ->
        raise ArgumentError,
              "#{inspect(module)} is not an actor type: it defines neither " <>
                "handle_message/3 nor handle_message/4 (use PacketFlow.Actor)"
    end
  end

  def code!(other) do
    raise ArgumentError, "an actor type is a module, got: #{inspect(other)}"
  end
end
