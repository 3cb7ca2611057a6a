defmodule PacketFlow.Reactor.Dispatcher do
  @moduledoc false
  # Owns a reactor's handler functions and its worker pool (see
  # PacketFlow.Reactor.Worker). Handler calls reach it only when no worker
  # is idle, as `{:pf_calls, [call]}` batches: it starts a worker for each.
  # It is also the home of the reactor's native work woken off the
  # schedulers (the reactor's connections, submits answered by a deadline):
  # that work waits in a native queue, the NIF wakes the dispatcher once for
  # all of it (`:pf_route`), and it runs it from here (`pool_route`).
  #
  # Workers are linked to the dispatcher, which traps their exits: when the
  # dispatcher stops (with its reactor) they are shut down with it, and a
  # worker that dies never takes anything else down. Workers are started
  # with spawn_link rather than through a supervisor: starting a child
  # through a supervisor is a synchronous call to it (4-6 us here,
  # measured), and nothing would restart a worker anyway (the pool makes a
  # new one when it needs one).
  #
  # Handler functions (and actor types' modules, whose turns the workers run
  # as they run handlers) are kept by registration id, a new id for every
  # registration, so a call runs the function of the registration the core
  # routed its packet to, whatever was registered or removed since. The NIF
  # sends `{:pf_forget, id}` once neither the core nor any unanswered call
  # holds the registration; the function is dropped then.
  #
  # Workers cache the functions they look up here; `generation` (an
  # :atomics counter) moves whenever a function is forgotten, which makes
  # them drop their caches at their next call (an idle worker ends within
  # two trim periods anyway).

  use GenServer

  # Workers idle through a whole period (so for trim_ms to 2 * trim_ms) end.
  @trim_ms 10_000

  alias PacketFlow.Native
  alias PacketFlow.Reactor.Worker

  @spec start_link() :: GenServer.on_start()
  def start_link, do: GenServer.start_link(__MODULE__, :ok)

  @doc false
  @spec pool(pid()) :: reference()
  def pool(dispatcher), do: GenServer.call(dispatcher, :pool)

  @spec put(pid(), pos_integer(), PacketFlow.Reactor.Handler.code()) :: :ok
  def put(dispatcher, id, fun), do: GenServer.call(dispatcher, {:put, id, fun})

  @doc false
  @spec handler(pid(), pos_integer()) :: PacketFlow.Reactor.Handler.code()
  def handler(dispatcher, id), do: GenServer.call(dispatcher, {:handler, id})

  @impl true
  def init(:ok) do
    Process.flag(:trap_exit, true)
    Process.send_after(self(), :trim, @trim_ms)
    {:ok, %{handlers: %{}, pool: Native.pool_new(), generation: :atomics.new(1, [])}}
  end

  @impl true
  def handle_call(:pool, _from, state), do: {:reply, state.pool, state}

  def handle_call({:put, id, fun}, _from, state) do
    # A new id: no worker has it cached, so no cache is stale.
    {:reply, :ok, %{state | handlers: Map.put(state.handlers, id, fun)}}
  end

  def handle_call({:handler, id}, _from, state),
    do: {:reply, Map.get(state.handlers, id), state}

  @impl true
  def handle_info({:pf_calls, calls}, state) do
    start_all(calls, state)
    {:noreply, state}
  end

  def handle_info(:pf_route, state) do
    Native.pool_route(state.pool)
    {:noreply, state}
  end

  def handle_info({:pf_forget, id}, state) do
    :atomics.add(state.generation, 1, 1)
    {:noreply, %{state | handlers: Map.delete(state.handlers, id)}}
  end

  def handle_info(:trim, state) do
    for worker <- Native.pool_trim(state.pool), do: send(worker, :pf_retire)
    Process.send_after(self(), :trim, @trim_ms)
    {:noreply, state}
  end

  # A worker that was idle too long left the pool and ended.
  def handle_info({:EXIT, _worker, :normal}, state), do: {:noreply, state}

  def handle_info({:EXIT, worker, _reason}, state) do
    # A worker died (killed, or taken down by a process it was linked to).
    # Its call, if it had one, is answered PF500 when the last reference
    # to the call's token goes away; this process may still hold one from
    # the message that started the worker, so collect now rather than at
    # some later garbage collection.
    Native.pool_forget(state.pool, worker)
    :erlang.garbage_collect()
    {:noreply, state}
  end

  defp start_all([], _state), do: :ok

  defp start_all([{id, _data, _packet_id, _metadata, _token} = call | rest], state) do
    # The function is here: a registration is only forgotten once its
    # calls are answered.
    Worker.start_link(self(), state.pool, state.generation, call, Map.get(state.handlers, id))
    start_all(rest, state)
  end
end
