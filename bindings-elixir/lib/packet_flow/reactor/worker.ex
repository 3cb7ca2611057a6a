defmodule PacketFlow.Reactor.Worker do
  @moduledoc false
  # A long-lived process of a reactor's handler pool: it runs handlers and
  # actors' turns alike (see PacketFlow.Reactor.Handler).
  #
  # The dispatcher starts a worker for a call that found no idle worker; once
  # it has answered, the worker's reply puts it on the pool's idle stack
  # (in the NIF), and from then on the NIF sends it calls directly, one at a
  # time, as `{:pf_call, handler_id, input, packet_id, metadata, token}`.
  # A call only ever goes to an idle worker, so a slow or blocked handler
  # delays no other call: when every worker is busy, the next call starts a
  # new one.
  #
  # What a handler leaves behind is cleared before the next call: its
  # process dictionary (Logger metadata included), a trap_exit flag, and
  # any stray message it left in the mailbox. That includes a cancellation
  # notice, `{:packetflow_cancelled, packet_id}`, the handler did not
  # receive: the NIF sends one only while the worker runs that call, before
  # the reply that puts the worker back on the idle stack returns, so it is
  # in the mailbox ahead of the next `:pf_call` and dropped on the way to
  # it. A worker that stayed idle for
  # a whole trim period of the dispatcher is taken off the idle stack and
  # told to end (`:pf_retire`), so waiting for a call sets no timer. A worker that dies (killed, or taken down by a
  # process a handler linked to it) answers its call PF500 when the call's
  # token is freed; the dispatcher forgets it and the pool carries on.

  alias PacketFlow.Native
  alias PacketFlow.Reactor.{Dispatcher, Handler}

  # What a worker knows: its dispatcher and pool, the handlers it has looked
  # up by registration id (kept while the dispatcher's generation counter,
  # moved when a registration is forgotten, stays where it was).
  defstruct [:dispatcher, :pool, :generation, :seen, cache: %{}]

  @doc false
  @spec start_link(pid(), reference(), :atomics.atomics_ref(), tuple(), Handler.code()) :: pid()
  def start_link(dispatcher, pool, generation, {id, _, _, _, token} = call, fun) do
    seen = :atomics.get(generation, 1)

    spawn_link(fn ->
      # A call sent to an idle worker knows its worker; this one learns it
      # here, so that the worker is told if its packet ends unanswered.
      Native.invocation_bind(token)

      state = %__MODULE__{
        dispatcher: dispatcher,
        pool: pool,
        generation: generation,
        seen: seen,
        cache: %{id => fun}
      }

      run(call, fun, state)
    end)
  end

  defp run({_id, data, packet_id, metadata, token}, fun, state) do
    Handler.run(fun, data, packet_id, metadata, token)
    tidy()
    loop(state)
  end

  defp loop(state) do
    receive do
      {:pf_call, id, data, packet_id, metadata, token} ->
        {fun, state} = handler(id, state)
        run({id, data, packet_id, metadata, token}, fun, state)

      :pf_retire ->
        :ok

      _stray ->
        loop(state)
    end
  end

  # The function of registration `id`: from the cache, which is emptied
  # when the dispatcher has forgotten a registration, else from the
  # dispatcher.
  defp handler(id, state) do
    now = :atomics.get(state.generation, 1)
    state = if now == state.seen, do: state, else: %{state | seen: now, cache: %{}}

    case state.cache do
      %{^id => fun} ->
        {fun, state}

      _ ->
        fun = Dispatcher.handler(state.dispatcher, id)
        {fun, %{state | cache: Map.put(state.cache, id, fun)}}
    end
  end

  defp tidy do
    if Process.get() != [], do: :erlang.erase()
    Process.flag(:trap_exit, false)
  end
end
