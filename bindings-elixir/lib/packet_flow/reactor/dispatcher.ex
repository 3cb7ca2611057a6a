defmodule PacketFlow.Reactor.Dispatcher do
  @moduledoc false
  # Receives handler invocations from the native reactor, in batches, and
  # starts one Task per invocation. The tasks are linked to the dispatcher,
  # which traps their exits: when the dispatcher stops (with its reactor)
  # they are shut down with it, and a task that dies never takes anything
  # else down.
  #
  # Tasks are started with Task.start_link rather than through a
  # Task.Supervisor: starting a child through a supervisor is a synchronous
  # call to it (about 4-6 us here, measured), which at 100k handler calls a
  # second would cost half a core on its own. The dispatcher keeps the
  # supervisor's guarantees that matter here: tasks are linked to a process
  # of the reactor's tree, their exits are observed, and they end with it.

  use GenServer

  alias PacketFlow.Native
  alias PacketFlow.Reactor.Handler

  @spec start_link() :: GenServer.on_start()
  def start_link, do: GenServer.start_link(__MODULE__, :ok)

  @spec put(pid(), pos_integer(), {function(), String.t()}) :: :ok
  def put(dispatcher, id, handler), do: GenServer.call(dispatcher, {:put, id, handler})

  @spec delete(pid(), pos_integer()) :: :ok
  def delete(dispatcher, id), do: GenServer.call(dispatcher, {:delete, id})

  @impl true
  def init(:ok) do
    Process.flag(:trap_exit, true)
    {:ok, %{}}
  end

  @impl true
  def handle_call({:put, id, handler}, _from, handlers),
    do: {:reply, :ok, Map.put(handlers, id, handler)}

  def handle_call({:delete, id}, _from, handlers), do: {:reply, :ok, Map.delete(handlers, id)}

  @impl true
  def handle_info({:pf_calls, calls}, handlers) do
    start_all(calls, handlers)
    {:noreply, handlers}
  end

  # A task that answered unlinks itself before it ends (see Handler.run/6),
  # so normal exits mostly never arrive here.
  def handle_info({:EXIT, _task, :normal}, handlers), do: {:noreply, handlers}

  def handle_info({:EXIT, _task, _reason}, handlers) do
    # A handler task was killed before answering. Its packet is answered
    # PF500 when the last reference to its invocation goes away; this
    # process may still hold one from the message that started it, so
    # collect now rather than at some later garbage collection.
    :erlang.garbage_collect()
    {:noreply, handlers}
  end

  defp start_all([], _handlers), do: :ok

  defp start_all([{id, data, packet_id, metadata, token} | rest], handlers) do
    case handlers do
      %{^id => {fun, _key}} ->
        {:ok, _pid} =
          Task.start_link(Handler, :run, [fun, data, packet_id, metadata, token, self()])

      _ ->
        # Unregistered while the packet was on its way: answered as the
        # core answers a packet that finds no handler.
        Native.reply_error(
          token,
          "PF001",
          "no handler: it was unregistered while the packet was on its way"
        )
    end

    start_all(rest, handlers)
  end
end
