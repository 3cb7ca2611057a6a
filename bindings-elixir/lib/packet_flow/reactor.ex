defmodule PacketFlow.Reactor do
  @moduledoc """
  A PacketFlow reactor: a GenServer owning one native reactor, its handler
  table and the processes its handlers run in.

  Start it under a supervisor:

      children = [
        {PacketFlow.Reactor, name: MyApp.Reactor, max_inflight: 256}
      ]

  or directly with `start_link/1`. Then `register/4` handlers and `submit/2`
  or `call/5` packets, from any process.

  ## How work flows

  * `submit/2` converts the packet in the calling process, then a
    `GenServer.call` hands it to the native reactor, which starts it and
    returns at once. The result arrives later as a message that the
    GenServer turns into the call's reply, so the GenServer is never
    blocked by a handler.
  * Each handler invocation arrives as a message at the reactor's
    dispatcher, which starts the handler in its own `Task`, linked to the
    dispatcher (which traps its exits). The handler's answer goes back
    through a NIF. A handler that raises, throws or exits answers PF500 with
    its message; a handler process that is killed answers PF500 too. Neither
    affects the reactor.
  * Stopping the reactor (`stop/1`, or its supervisor shutting down) stops
    the native reactor: packets still in flight are answered PF503, handler
    tasks are shut down, and the native resources are freed.


  ## On the network

  A reactor joins other PacketFlow nodes (any language, or the
  `packetflow serve` hub) over WebSocket: `listen/2` accepts peers,
  `connect/3` dials one, or both at start:

      {PacketFlow.Reactor,
       name: MyApp.Reactor,
       listen: "127.0.0.1:8443",
       connect: ["ws://hub.internal:8443/packetflow/v1"]}

  A submit with no local handler goes to a peer that announced one; the
  reactor's own handlers serve submits from its peers. Connections are
  owned by the native node: a lost connection is redialled with backoff
  until the reactor stops, and stopping the reactor closes them (packets in
  flight are answered PF503 first).
  """

  use GenServer

  alias PacketFlow.{Native, Result}
  alias PacketFlow.Reactor.Dispatcher

  @typedoc "A running reactor: its pid or registered name."
  @type t :: GenServer.server()

  @typedoc """
  A handler: called with the packet's data and a `PacketFlow.Context` (or
  with the data alone), it returns the result's data. It may also return
  `{:ok, data}`, `{:error, %PacketFlow.Error{}}` (that error, code included)
  or `{:error, reason}` (PF500).
  """
  @type handler ::
          (PacketFlow.value(), PacketFlow.Context.t() -> term()) | (PacketFlow.value() -> term())

  @typedoc """
  A packet to submit, as a map or keyword list. `:group` and `:element` are
  required; `:data` defaults to `nil`, `:priority` (1-10, 10 most urgent)
  to 5, `:timeout_ms` to 30 000, `:id` to a fresh UUID.
  """
  @type packet ::
          %{
            required(:group) => PacketFlow.name(),
            required(:element) => PacketFlow.name(),
            optional(:data) => PacketFlow.value(),
            optional(:id) => String.t(),
            optional(:priority) => 1..10,
            optional(:timeout_ms) => pos_integer(),
            optional(:dependencies) => [String.t()],
            optional(:metadata) => %{optional(String.t() | atom()) => PacketFlow.value()}
          }
          | keyword()

  @typedoc """
  Options of `start_link/1`:

  * `:name` - registers the reactor process (any `GenServer` name); an atom
    name also names the reactor in its stats.
  * `:reactor_name` - the name shown in stats (default: from `:name`, else
    `"packetflow"`).
  * `:max_inflight` - most handlers running at once (default 1024); more
    packets wait in a priority queue.
  * `:max_queue` - most packets waiting (default 65 536); past it, submits
    are answered PF429.
  * `:listen` - an address to accept peers on (`"127.0.0.1:8443"`; port 0
    picks a free one), as with `listen/2` before `start_link/1` returns.
  * `:connect` - peers to dial before `start_link/1` returns: a URL, or a
    list of URLs and `{url, connect_options}` pairs (see `connect/3`).

  When listening or dialling fails, the reactor does not start:
  `start_link/1` returns `{:error, %PacketFlow.Error{}}` (and, as with any
  `init/1` that stops, the linked caller receives the exit).
  """
  @type option ::
          {:name, GenServer.name()}
          | {:reactor_name, String.t()}
          | {:max_inflight, pos_integer()}
          | {:max_queue, non_neg_integer()}
          | {:listen, String.t()}
          | {:connect, String.t() | [String.t() | {String.t(), [connect_option()]}]}

  @typedoc """
  Options of `connect/3`:

  * `:msgpack` - speak MessagePack on this connection instead of JSON
    (default `false`); the peer must offer it.
  """
  @type connect_option :: {:msgpack, boolean()}

  @typedoc "Where `listen/2` accepts peers: the address bound and the URL to dial."
  @type listening :: %{host: String.t(), port: :inet.port_number(), url: String.t()}

  @typedoc "Counters from `stats/1`."
  @type stats :: %{
          name: String.t(),
          in_flight: non_neg_integer(),
          queued: non_neg_integer(),
          unrouted: non_neg_integer(),
          handlers: [
            %{
              group: String.t(),
              element: String.t(),
              count: non_neg_integer(),
              errors: non_neg_integer(),
              sum_us: non_neg_integer(),
              p50_us: non_neg_integer(),
              p99_us: non_neg_integer()
            }
          ]
        }

  @options [:name, :reactor_name, :max_inflight, :max_queue, :listen, :connect]
  # Extra wait past a packet's own deadline before a submit gives up on the
  # GenServer: the core answers every packet by its deadline.
  @grace_ms 5_000
  # How long stop/1 lets packets in flight collect their PF503 answers.
  @drain_ms 2_000
  # Longest wait for a listen or connect. The core bounds both (binding
  # fails at once; a dial gives up after its handshake timeout), so this
  # only guards against a core that never answers.
  @network_timeout_ms 60_000

  @doc """
  A child spec; the child id is the `:name` option when given, so several
  reactors can live under one supervisor.
  """
  @spec child_spec([option()]) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      type: :worker,
      shutdown: 5_000
    }
  end

  @doc """
  Starts a reactor linked to the caller. See `t:option/0`.

  Raises `ArgumentError` for unknown options or values of the wrong type.
  """
  @spec start_link([option()]) :: GenServer.on_start()
  def start_link(opts \\ []) do
    opts = Keyword.validate!(opts, @options)
    config = config!(opts)

    case Keyword.fetch(opts, :name) do
      {:ok, name} -> GenServer.start_link(__MODULE__, config, name: name)
      :error -> GenServer.start_link(__MODULE__, config)
    end
  end

  defp config!(opts) do
    name =
      case Keyword.fetch(opts, :reactor_name) do
        {:ok, n} when is_binary(n) ->
          n

        {:ok, other} ->
          raise ArgumentError, "reactor_name must be a string, got: #{inspect(other)}"

        :error ->
          default_name(opts[:name])
      end

    %{
      name: name,
      max_inflight: positive!(opts, :max_inflight, 1024),
      max_queue: non_negative!(opts, :max_queue, 65_536),
      listen: listen_option!(Keyword.get(opts, :listen)),
      connect: connect_option!(Keyword.get(opts, :connect, []))
    }
  end

  defp listen_option!(nil), do: nil
  defp listen_option!(addr) when is_binary(addr), do: addr

  defp listen_option!(other),
    do: raise(ArgumentError, "listen must be an address string, got: #{inspect(other)}")

  defp connect_option!(url) when is_binary(url), do: [{url, msgpack?(url, [])}]

  defp connect_option!(peers) when is_list(peers) do
    Enum.map(peers, fn
      url when is_binary(url) -> {url, false}
      {url, opts} when is_binary(url) and is_list(opts) -> {url, msgpack?(url, opts)}
      other -> raise ArgumentError, "connect entries are URLs or {url, opts}, got: #{inspect(other)}"
    end)
  end

  defp connect_option!(other),
    do: raise(ArgumentError, "connect must be a URL or a list of URLs, got: #{inspect(other)}")

  defp msgpack?(url, opts) do
    case Keyword.validate(opts, msgpack: false) do
      {:ok, [msgpack: flag]} when is_boolean(flag) ->
        flag

      {:ok, [msgpack: other]} ->
        raise ArgumentError, "msgpack must be a boolean, got: #{inspect(other)} (for #{url})"

      {:error, unknown} ->
        raise ArgumentError, "unknown connect options #{inspect(unknown)} (for #{url})"
    end
  end

  defp default_name(name) when is_atom(name) and name != nil do
    name |> Atom.to_string() |> String.replace_prefix("Elixir.", "")
  end

  defp default_name(_), do: "packetflow"

  defp positive!(opts, key, default) do
    case Keyword.get(opts, key, default) do
      n when is_integer(n) and n > 0 -> n
      other -> raise ArgumentError, "#{key} must be a positive integer, got: #{inspect(other)}"
    end
  end

  defp non_negative!(opts, key, default) do
    case Keyword.get(opts, key, default) do
      n when is_integer(n) and n >= 0 ->
        n

      other ->
        raise ArgumentError, "#{key} must be a non-negative integer, got: #{inspect(other)}"
    end
  end

  @doc """
  Registers `fun` as the handler of `group:element`, replacing any handler
  it had.

  `fun` takes `(data, ctx)` or `(data)`; see `t:handler/0` for what it may
  return. Returns `{:error, %PacketFlow.Error{code: "PF400"}}` when a name
  breaks the protocol's rules (groups are `cf df ed co mc rm`; elements are
  1-64 characters of `[A-Za-z0-9_.-]`).
  """
  @spec register(t(), PacketFlow.name(), PacketFlow.name(), handler()) ::
          :ok | {:error, PacketFlow.Error.t()}
  def register(reactor, group, element, fun) do
    fun =
      cond do
        is_function(fun, 2) ->
          fun

        is_function(fun, 1) ->
          fn data, _ctx -> fun.(data) end

        true ->
          raise ArgumentError,
                "a handler must be a function of arity 1 or 2, got: #{inspect(fun)}"
      end

    key = {PacketFlow.name!(group, "group"), PacketFlow.name!(element, "element")}
    GenServer.call(reactor, {:register, key, fun})
  end

  @doc "Removes the handler of `group:element`; `false` if there was none."
  @spec unregister(t(), PacketFlow.name(), PacketFlow.name()) :: boolean()
  def unregister(reactor, group, element) do
    key = {PacketFlow.name!(group, "group"), PacketFlow.name!(element, "element")}
    GenServer.call(reactor, {:unregister, key})
  end

  @doc """
  Submits a packet and waits for its result.

  Always `{:ok, %PacketFlow.Result{}}`: a failure is a result with
  `status: :error` and its `PacketFlow.Error` (PF001 no handler, PF400
  invalid field, PF408 timeout, PF409 duplicate id, PF424 dependency
  failed, PF429 queue full, PF500 handler failed, PF503 stopping).

  The packet is converted in the calling process. Raises `ArgumentError`
  when it is not a map or keyword list of known fields, or when a value is
  not JSON-shaped (the message names the type and the path).
  """
  @spec submit(t(), packet()) :: {:ok, Result.t()}
  def submit(reactor, packet) when is_list(packet), do: submit(reactor, Map.new(packet))

  def submit(reactor, packet) do
    case Native.packet_new(packet) do
      {:ok, native_packet, timeout_ms} ->
        GenServer.call(reactor, {:submit, native_packet}, timeout_ms + @grace_ms)

      {:invalid, result} ->
        {:ok, result}

      {:badarg, message} ->
        raise ArgumentError, message
    end
  end

  @doc """
  Submits `data` to `group:element` and returns the handler's data.

  `opts` are the other packet fields (`:priority`, `:timeout_ms`, `:id`,
  `:dependencies`, `:metadata`). Returns `{:ok, data}` or
  `{:error, %PacketFlow.Error{code: "PF500", message: ...}}`; raises like
  `submit/2` for values that cannot cross.
  """
  @spec call(t(), PacketFlow.name(), PacketFlow.name(), PacketFlow.value(), keyword()) ::
          {:ok, PacketFlow.value()} | {:error, PacketFlow.Error.t()}
  def call(reactor, group, element, data \\ nil, opts \\ []) when is_list(opts) do
    packet = opts |> Map.new() |> Map.merge(%{group: group, element: element, data: data})
    {:ok, result} = submit(reactor, packet)
    Result.to_tuple(result)
  end

  @doc """
  Accepts peers on `addr` (`"HOST:PORT"`; port 0 picks a free one).

  Peers dial `url` (`ws://HOST:PORT/packetflow/v1`); the same port answers
  `GET /health` and `GET /metrics`. Returns `{:error, %PacketFlow.Error{}}`
  when the address cannot be bound.
  """
  @spec listen(t(), String.t()) :: {:ok, listening()} | {:error, PacketFlow.Error.t()}
  def listen(reactor, addr) when is_binary(addr) do
    GenServer.call(reactor, {:network, {:listen, addr}}, @network_timeout_ms + @grace_ms)
  end

  @doc """
  Dials a peer at `url` (`ws://HOST:PORT/packetflow/v1`). See
  `t:connect_option/0`.

  Returns `:ok` once the connection is up and the peer's handlers are
  known, so a submit right after is routed to them. A connection lost later
  is redialled with backoff until the reactor stops. Returns
  `{:error, %PacketFlow.Error{}}` when the first dial fails.
  """
  @spec connect(t(), String.t(), [connect_option()]) :: :ok | {:error, PacketFlow.Error.t()}
  def connect(reactor, url, opts \\ []) when is_binary(url) and is_list(opts) do
    request = {:connect, url, msgpack?(url, opts)}
    GenServer.call(reactor, {:network, request}, @network_timeout_ms + @grace_ms)
  end

  @doc "A snapshot of the reactor's counters. See `t:stats/0`."
  @spec stats(t()) :: stats()
  def stats(reactor), do: GenServer.call(reactor, :stats)

  @doc """
  Stops the reactor. Packets in flight are answered PF503, handler tasks
  are shut down and the native reactor is freed.
  """
  @spec stop(t(), timeout()) :: :ok
  def stop(reactor, timeout \\ :infinity), do: GenServer.stop(reactor, :normal, timeout)

  ## GenServer callbacks

  @impl true
  def init(config) do
    # Exits of the dispatcher arrive as messages, so the reactor can stop
    # cleanly (answering what is in flight) instead of dying with it.
    Process.flag(:trap_exit, true)
    {:ok, dispatcher} = Dispatcher.start_link()

    native =
      Native.reactor_new(config.name, config.max_inflight, config.max_queue, self(), dispatcher)

    state = %{
      native: native,
      dispatcher: dispatcher,
      pending: %{},
      network: %{},
      # Tags below this one were used by the `:listen`/`:connect` options.
      next_tag: 1 + length(config.connect),
      handler_ids: %{},
      next_handler_id: 1
    }

    case join_network(state, config) do
      :ok ->
        {:ok, state}

      {:error, error} ->
        Native.reactor_stop(native)
        Process.exit(dispatcher, :shutdown)
        {:stop, error}
    end
  end

  # The `:listen` and `:connect` options, in order, before start_link
  # returns; the first failure stops the start.
  defp join_network(state, config) do
    requests =
      List.wrap(config.listen && {:listen, config.listen}) ++
        Enum.map(config.connect, fn {url, msgpack} -> {:connect, url, msgpack} end)

    requests
    |> Enum.with_index()
    |> Enum.reduce_while(:ok, fn {request, tag}, :ok ->
      start_network(state.native, request, tag)

      receive do
        {:pf_net, ^tag, {:ok, _}} -> {:cont, :ok}
        {:pf_net, ^tag, {:error, _} = error} -> {:halt, error}
      after
        @network_timeout_ms -> {:halt, {:error, network_timeout(request)}}
      end
    end)
  end

  # The answer arrives as `{:pf_net, tag, {:ok, _} | {:error, _}}`.
  defp start_network(native, {:listen, addr}, tag), do: Native.reactor_listen(native, addr, tag)

  defp start_network(native, {:connect, url, msgpack}, tag),
    do: Native.reactor_connect(native, url, msgpack, tag)

  defp network_timeout({:listen, addr}),
    do: %PacketFlow.Error{code: "PF408", message: "listening on #{addr} did not finish"}

  defp network_timeout({:connect, url, _}),
    do: %PacketFlow.Error{code: "PF408", message: "dialling #{url} did not finish"}

  @impl true
  def handle_call({:submit, packet}, from, state) do
    tag = state.next_tag

    case Native.reactor_submit(state.native, tag, packet) do
      :pending ->
        {:noreply, %{state | next_tag: tag + 1, pending: Map.put(state.pending, tag, from)}}

      {:done, result} ->
        {:reply, {:ok, result}, state}
    end
  end

  def handle_call({:register, {group, element} = key, fun}, _from, state) do
    {id, state} =
      case state.handler_ids do
        %{^key => id} -> {id, state}
        _ -> {state.next_handler_id, %{state | next_handler_id: state.next_handler_id + 1}}
      end

    # The dispatcher learns the function before the core can route to it.
    :ok = Dispatcher.put(state.dispatcher, id, {fun, "#{group}:#{element}"})

    case Native.reactor_register(state.native, group, element, id) do
      :ok ->
        {:reply, :ok, %{state | handler_ids: Map.put(state.handler_ids, key, id)}}

      {:error, _} = error ->
        if not Map.has_key?(state.handler_ids, key), do: Dispatcher.delete(state.dispatcher, id)
        {:reply, error, state}
    end
  end

  def handle_call({:unregister, {group, element} = key}, _from, state) do
    removed = Native.reactor_unregister(state.native, group, element)

    case Map.pop(state.handler_ids, key) do
      {nil, _} ->
        {:reply, removed, state}

      {id, ids} ->
        :ok = Dispatcher.delete(state.dispatcher, id)
        {:reply, removed, %{state | handler_ids: ids}}
    end
  end

  def handle_call({:network, request}, from, state) do
    # Network calls share the submits' tag counter; their replies come
    # as :pf_net messages, so the tags are never confused.
    tag = state.next_tag
    :ok = start_network(state.native, request, tag)
    {:noreply, %{state | next_tag: state.next_tag + 1, network: Map.put(state.network, tag, from)}}
  end

  def handle_call(:stats, _from, state) do
    {:reply, Native.reactor_stats(state.native), state}
  end

  @impl true
  def handle_info({:pf_result, tag, result}, state) do
    {:noreply, %{state | pending: reply_one(tag, result, state.pending)}}
  end

  def handle_info({:pf_results, results}, state) do
    {:noreply, %{state | pending: reply_all(results, state.pending)}}
  end

  def handle_info({:pf_net, tag, outcome}, state) do
    case Map.pop(state.network, tag) do
      {nil, _} ->
        {:noreply, state}

      {from, network} ->
        GenServer.reply(from, network_reply(outcome))
        {:noreply, %{state | network: network}}
    end
  end

  def handle_info({:EXIT, pid, reason}, %{dispatcher: pid} = state) do
    {:stop, {:dispatcher_exited, reason}, state}
  end

  def handle_info({:EXIT, _pid, :normal}, state), do: {:noreply, state}

  def handle_info({:EXIT, _pid, reason}, state) do
    # A linked process crashed: without trapping exits the reactor would
    # have died with it, so it stops the same way (answering what is in
    # flight on its way out).
    {:stop, reason, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp network_reply({:ok, :ok}), do: :ok
  defp network_reply(outcome), do: outcome

  @impl true
  def terminate(_reason, state) do
    Native.reactor_stop(state.native)
    drain(state.pending, System.monotonic_time(:millisecond) + @drain_ms)
    Process.exit(state.dispatcher, :shutdown)
    :ok
  end

  defp reply_all([], pending), do: pending

  defp reply_all([{tag, result} | rest], pending),
    do: reply_all(rest, reply_one(tag, result, pending))

  defp reply_one(tag, result, pending) do
    case pending do
      %{^tag => from} ->
        GenServer.reply(from, {:ok, result})
        Map.delete(pending, tag)

      _ ->
        pending
    end
  end

  # After the core stopped, every packet in flight is answered PF503 within
  # moments; relay those answers so no caller is left with an exit.
  defp drain(pending, _deadline) when map_size(pending) == 0, do: :ok

  defp drain(pending, deadline) do
    wait = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:pf_result, tag, result} -> drain(reply_one(tag, result, pending), deadline)
      {:pf_results, results} -> drain(reply_all(results, pending), deadline)
    after
      wait -> :ok
    end
  end
end
