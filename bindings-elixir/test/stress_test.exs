defmodule PacketFlow.StressTest do
  @moduledoc """
  Many submitters, handlers completed by other processes, stops during
  traffic: every packet is answered exactly once, nothing hangs, and the
  orderings the bridge relies on (docs/bindings.md, "Elixir") hold.
  """
  # Not async: heavy, and it counts native resources.
  use ExUnit.Case, async: false
  import PacketFlow.TestHelpers

  alias PacketFlow.{Context, Error, Native, Reactor, Result}

  @wait 60_000

  # Runs `per` calls from each of `n` processes (`call.(s, i)` returns the
  # answer and what it should be). Each process then reports the result
  # messages left in its mailbox: a packet answered twice leaves one.
  defp submitters(n, per, call) do
    1..n
    |> Enum.map(fn s ->
      Task.async(fn ->
        wrong = for i <- 1..per, {got, want} = call.(s, i), got != want, do: {i, got, want}
        {wrong, leftovers()}
      end)
    end)
    |> Task.await_many(@wait)
  end

  defp leftovers do
    receive do
      {:pf_result, _, _} = m -> [m | leftovers()]
      {:pf_child, _, _} = m -> [m | leftovers()]
    after
      0 -> []
    end
  end

  # A process that answers `{:work, from, ref, data}` with `{ref, answer}`:
  # handlers that wait for it complete because of another process.
  defp completer do
    spawn_link(fn -> complete() end)
  end

  defp complete do
    receive do
      {:work, from, ref, data} ->
        send(from, {ref, %{"done" => data}})
        complete()
    end
  end

  # Counts how often each packet's work ran (packets are numbered 1..size).
  defp runs(size), do: :counters.new(size, [:atomics])

  defp ran(nil, _data, _per), do: :ok

  defp ran(counters, %{"s" => s, "i" => i}, per),
    do: :counters.add(counters, (s - 1) * per + i, 1)

  defp once?(counters, size), do: Enum.all?(1..size, &(:counters.get(counters, &1) == 1))

  # Handlers of every kind, on reactor `r`: answered at once, completed by
  # another process, and by a child call answered in another worker (whose
  # error, if any, the parent passes on). `counters` (or nil) counts runs.
  defp register_kinds(r, counters, per) do
    helper = completer()

    :ok =
      Reactor.register(r, "df", "echo", fn data ->
        ran(counters, data, per)
        %{"done" => data}
      end)

    :ok =
      Reactor.register(r, "df", "relay", fn data ->
        ran(counters, data, per)
        ref = make_ref()
        send(helper, {:work, self(), ref, data})

        receive do
          {^ref, answer} -> answer
        after
          @wait -> "the completer did not answer"
        end
      end)

    :ok =
      Reactor.register(r, "df", "parent", fn data, ctx ->
        Context.call(ctx, "df", "echo", data)
      end)
  end

  defp kind(i), do: Enum.at(["echo", "relay", "parent"], rem(i, 3))

  # Without child calls: in a reactor with few slots, parents waiting for
  # children that wait for a slot would time out.
  defp flat_kind(i), do: Enum.at(["echo", "relay"], rem(i, 2))

  test "many submitters, handlers completed by other processes: each packet answered once" do
    {n, per} = {100, 30}
    r = start_reactor!()
    counters = runs(n * per)
    register_kinds(r, counters, per)

    reports =
      submitters(n, per, fn s, i ->
        data = %{"s" => s, "i" => i}
        {Reactor.call(r, "df", kind(i), data), {:ok, %{"done" => data}}}
      end)

    assert Enum.all?(reports, &(&1 == {[], []}))
    assert once?(counters, n * per)
    assert %{in_flight: 0, queued: 0} = Reactor.stats(r)
  end

  test "over the network, with handlers completed by other processes: each packet answered once" do
    {n, per} = {40, 30}
    server = start_reactor!()
    counters = runs(n * per)
    register_kinds(server, counters, per)
    {:ok, %{url: url}} = Reactor.listen(server, "127.0.0.1:0")
    client = start_reactor!(connect: url)

    reports =
      submitters(n, per, fn s, i ->
        data = %{"s" => s, "i" => i}
        {Reactor.call(client, "df", kind(i), data), {:ok, %{"done" => data}}}
      end)

    assert Enum.all?(reports, &(&1 == {[], []}))
    assert once?(counters, n * per)
  end

  test "a narrow reactor hands each next packet to the worker that just answered" do
    # The reply NIF puts the worker back on the idle stack before its answer
    # frees the slot that lets the next packet start: that packet then goes
    # to the same warm worker. The other way round, it would find no idle
    # worker and the pool would start one.
    r = start_reactor!(max_inflight: 1)
    test = self()
    :ok = Reactor.register(r, "df", "who", fn i -> send(test, {:served, i, self()}) && i end)

    reports =
      submitters(50, 10, fn s, i ->
        {Reactor.call(r, "df", "who", s * 100 + i), {:ok, s * 100 + i}}
      end)

    assert Enum.all?(reports, &(&1 == {[], []}))

    # Every answer is in, so every report is in the mailbox.
    workers = for _ <- 1..500, uniq: true, do: served!()
    assert length(workers) == 1
    assert Native.pool_idle(:sys.get_state(dispatcher_of(r)).pool) == 1
  end

  test "stopping during traffic: each submit answered once, PF503 for what was in flight" do
    before = settled_reactors!()
    {:ok, r} = Reactor.start_link(max_inflight: 8)
    Process.unlink(r)
    test = self()
    register_kinds(r, nil, 0)

    :ok =
      Reactor.register(r, "df", "hold", fn data ->
        send(test, {:holding, self()})

        receive do
          :release -> data
        after
          @wait -> "never released"
        end
      end)

    # Submitters call in a loop until the reactor is gone; a few packets
    # are held by their handlers, others wait for a slot.
    loopers =
      for s <- 1..40 do
        Task.async(fn -> loop_until_stopped(r, s, 0, []) end)
      end

    holders = for i <- 1..4, do: Task.async(fn -> Reactor.call(r, "df", "hold", i) end)
    held = for _ <- 1..4, do: holding!()
    waiting = for i <- 1..20, do: Task.async(fn -> Reactor.call(r, "df", "hold", 100 + i) end)
    wait_until(fn -> Reactor.stats(r).queued > 0 end, 5_000, "packets to wait for a slot")
    refs = for pid <- held, do: Process.monitor(pid)

    :ok = Reactor.stop(r)

    # Held and waiting packets: PF503 from the core's stop, never PF500
    # (the handler workers end after the stop has answered them).
    for task <- holders ++ waiting do
      assert {:error, %Error{code: "PF503"}} = Task.await(task, @wait)
    end

    for ref <- refs, do: assert_receive({:DOWN, ^ref, :process, _, _}, 5_000)

    for {outcomes, left} <- Task.await_many(loopers, @wait) do
      assert left == []
      assert [last | answered] = outcomes
      assert last in [:noproc, "PF503"], "ended with #{inspect(last)}"
      assert Enum.all?(answered, &(&1 == :ok))
    end

    wait_until(fn -> Native.live_reactors() == before end, 5_000, "the reactor to be freed")
    wait_until(fn -> Native.live_invocations() == 0 end, 5_000, "invocations to be freed")
  end

  defp holding! do
    receive do
      {:holding, pid} -> pid
    after
      @wait -> flunk("a held handler did not start")
    end
  end

  defp served! do
    receive do
      {:served, _, pid} -> pid
    after
      0 -> flunk("a handler did not report")
    end
  end

  test "stop has sent every PF503 when it returns" do
    # The stop NIF polls the packets it ends and sends their answers
    # itself, before the dispatcher (which would otherwise) is shut down.
    {:ok, r} = Reactor.start_link(max_inflight: 4)
    Process.unlink(r)
    :ok = Reactor.register(r, "df", "hold", blocking_handler(self()))

    # A submitter each (a process waits for one submit at a time: a second
    # with the same submitter would withdraw the first), all kept.
    pending =
      for i <- 1..200 do
        tag = make_ref()
        packet = %{group: "df", element: "hold", data: i}
        submitter = Native.submitter_new()
        assert {:pending, _} = Native.reactor_submit(r, packet, tag, submitter)
        {tag, submitter}
      end

    for _ <- 1..4, do: receive_started!()
    # A suspended dispatcher polls nothing: what it was left would not be
    # answered before it is resumed.
    dispatcher = dispatcher_of(r)
    ref = Process.monitor(dispatcher)
    true = :erlang.suspend_process(dispatcher)
    :ok = Reactor.stop(r)

    for {tag, _submitter} <- pending do
      assert_received {:pf_result, ^tag, %Result{error: %Error{code: "PF503"}}}
    end

    true = :erlang.resume_process(dispatcher)
    assert_receive {:DOWN, ^ref, :process, ^dispatcher, _}, 5_000
  end

  # Calls until the reactor answers PF503 or is gone; returns the outcomes,
  # last first, and the result messages left over.
  defp loop_until_stopped(r, s, i, outcomes) do
    data = %{"s" => s, "i" => i}

    outcome =
      try do
        case Reactor.submit(r, %{group: "df", element: flat_kind(i), data: data}) do
          {:ok, %Result{status: :success, data: %{"done" => ^data}}} -> :ok
          {:ok, %Result{error: %Error{code: code}}} -> code
        end
      catch
        :exit, {:noproc, _} -> :noproc
      end

    if outcome == :ok and i < 100_000,
      do: loop_until_stopped(r, s, i + 1, [outcome | outcomes]),
      else: {[outcome | outcomes], leftovers()}
  end
end
