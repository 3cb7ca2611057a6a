defmodule PacketFlow.PoolTest do
  # Handler workers and the direct submit path: what the pool guarantees
  # when handlers die, block or leave things behind, and what callers see.
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Error, Reactor}

  setup do
    %{r: start_reactor!()}
  end

  # The pid of the worker that serves the next "df:whoami" call.
  defp whoami(r) do
    test = self()
    tag = make_ref()
    :ok = Reactor.register(r, "df", "whoami", fn _ -> send(test, {tag, self()}) && "ok" end)
    assert {:ok, "ok"} = Reactor.call(r, "df", "whoami")
    assert_receive {^tag, pid}
    pid
  end

  test "a worker killed mid-call answers PF500, and the pool carries on", %{r: r} do
    :ok = Reactor.register(r, "df", "kill", fn _ -> Process.exit(self(), :kill) end)
    :ok = Reactor.register(r, "df", "echo", fn d -> d end)

    for i <- 1..20 do
      assert {:error, %Error{code: "PF500", message: m}} = Reactor.call(r, "df", "kill", i)
      assert m =~ "ended without answering"
      assert {:ok, ^i} = Reactor.call(r, "df", "echo", i)
    end

    assert %{in_flight: 0} = Reactor.stats(r)
  end

  test "a worker killed while idle is replaced", %{r: r} do
    :ok = Reactor.register(r, "df", "echo", fn d -> d end)

    for round <- 1..10 do
      worker = whoami(r)
      ref = Process.monitor(worker)
      Process.exit(worker, :kill)
      assert_receive {:DOWN, ^ref, :process, ^worker, :killed}
      # The next calls reach live workers, whether or not the dispatcher
      # has forgotten the dead one yet.
      for i <- 1..5, do: assert({:ok, ^i} = Reactor.call(r, "df", "echo", i))
      refute whoami(r) == worker, "round #{round}: a dead worker served a call"
    end
  end

  test "a blocked handler holds up no other call", %{r: r} do
    :ok = Reactor.register(r, "df", "hold", blocking_handler(self()))
    :ok = Reactor.register(r, "df", "echo", fn d -> d end)
    # Warm one worker, which is the one the next call takes (most recent idle).
    warm = whoami(r)
    holder = Task.async(fn -> Reactor.call(r, "df", "hold", "held") end)
    {held_by, "held"} = receive_started!()
    assert held_by == warm

    # While it is blocked, other calls are served by other workers, at once.
    results =
      1..50
      |> Enum.map(fn i ->
        Task.async(fn -> Reactor.call(r, "df", "echo", i, timeout_ms: 2_000) end)
      end)
      |> Task.await_many(5_000)

    assert results == Enum.map(1..50, &{:ok, &1})
    refute whoami(r) == held_by
    send(held_by, :release)
    assert {:ok, "held"} = Task.await(holder)
  end

  test "a worker clears what a handler left behind before its next call", %{r: r} do
    :ok =
      Reactor.register(r, "df", "messy", fn _ ->
        Process.put(:left, :behind)
        Logger.metadata(request: "x")
        Process.flag(:trap_exit, true)
        send(self(), :stray)
        "done"
      end)

    :ok =
      Reactor.register(r, "df", "inspect", fn _ ->
        {:messages, messages} = Process.info(self(), :messages)
        {:trap_exit, trap} = Process.info(self(), :trap_exit)

        %{
          "dictionary" => Process.get() |> Keyword.keys() |> Enum.map(&inspect/1),
          "trap_exit" => trap,
          "messages" => length(messages),
          "pid" => inspect(self())
        }
      end)

    worker = whoami(r)
    assert {:ok, "done"} = Reactor.call(r, "df", "messy")
    # The stray message is dropped when the worker next waits for a call.
    assert {:ok, %{"pid" => pid, "dictionary" => [], "trap_exit" => false, "messages" => 0}} =
             Reactor.call(r, "df", "inspect")

    assert pid == inspect(worker)
  end

  # A reactor `r` serving over loopback, and a client reactor connected to
  # it: the client's calls reach `r`'s workers from its connection (polled
  # by its dispatcher), not from a caller's NIF.
  defp over_network!(r) do
    {:ok, %{url: url}} = Reactor.listen(r, "127.0.0.1:0")
    client = start_reactor!()
    :ok = Reactor.connect(client, url)
    client
  end

  test "a blocked handler holds up no call that arrives over the network", %{r: r} do
    :ok = Reactor.register(r, "df", "hold", blocking_handler(self()))
    :ok = Reactor.register(r, "df", "echo", fn d -> d end)
    client = over_network!(r)
    holder = Task.async(fn -> Reactor.call(client, "df", "hold", "held", timeout_ms: 10_000) end)
    {held_by, "held"} = receive_started!()

    # Many calls at once, arriving in batches; none of them waits for the
    # blocked one.
    results =
      1..300
      |> Enum.map(fn i ->
        Task.async(fn -> Reactor.call(client, "df", "echo", i, timeout_ms: 2_000) end)
      end)
      |> Task.await_many(5_000)

    assert results == Enum.map(1..300, &{:ok, &1})
    send(held_by, :release)
    assert {:ok, "held"} = Task.await(holder)
  end

  test "workers clear what handlers left behind between calls that arrive over the network", %{
    r: r
  } do
    :ok =
      Reactor.register(r, "df", "messy", fn _ ->
        Process.put(:left, :behind)
        send(self(), :stray)
        "done"
      end)

    :ok =
      Reactor.register(r, "df", "inspect", fn _ ->
        {:message_queue_len, n} = Process.info(self(), :message_queue_len)
        %{"dictionary" => length(Process.get()), "messages" => n}
      end)

    client = over_network!(r)

    results =
      1..400
      |> Enum.map(fn i ->
        element = if rem(i, 2) == 0, do: "messy", else: "inspect"
        Task.async(fn -> Reactor.call(client, "df", element, i, timeout_ms: 5_000) end)
      end)
      |> Task.await_many(10_000)

    for {result, i} <- Enum.with_index(results, 1) do
      expected = if rem(i, 2) == 0, do: "done", else: %{"dictionary" => 0, "messages" => 0}
      assert result == {:ok, expected}, "call #{i}"
    end
  end

  test "a caller killed while its call runs cancels it and leaks nothing", %{r: r} do
    :ok = Reactor.register(r, "df", "hold", blocking_handler(self()))
    :ok = Reactor.register(r, "df", "echo", fn d -> d end)
    caller = spawn(fn -> Reactor.call(r, "df", "hold", 1) end)
    {worker, 1} = receive_started!()
    ref = Process.monitor(caller)
    Process.exit(caller, :kill)
    assert_receive {:DOWN, ^ref, :process, ^caller, :killed}
    # The packet is cancelled; the handler answers anyway, to no one.
    wait_until(fn -> Reactor.stats(r).in_flight == 0 end, 2_000, "the packet to be cancelled")
    send(worker, :release)

    assert [%{count: 1, errors: 1, cancelled: 1}] =
             Enum.filter(Reactor.stats(r).handlers, &(&1.element == "hold"))

    assert {:ok, 2} = Reactor.call(r, "df", "echo", 2)
  end

  test "a caller killed while its packet waits in the queue cancels it and leaks nothing" do
    r = start_reactor!(max_inflight: 1)
    :ok = Reactor.register(r, "df", "hold", blocking_handler(self()))
    first = Task.async(fn -> Reactor.call(r, "df", "hold", 1) end)
    {worker, 1} = receive_started!()
    queued = spawn(fn -> Reactor.call(r, "df", "hold", 2) end)
    wait_until(fn -> Reactor.stats(r).queued == 1 end, 2_000, "the second packet to queue")
    Process.exit(queued, :kill)
    wait_until(fn -> Reactor.stats(r).queued == 0 end, 2_000, "the queued packet to be cancelled")
    send(worker, :release)
    assert {:ok, 1} = Task.await(first)
    # The slot the first packet freed goes to nobody: the cancelled packet
    # never ran (it would hold the slot, blocked, with nobody to release it).
    wait_until(fn -> Reactor.stats(r).in_flight == 0 end, 2_000, "the queue to drain")
    refute_received {:started, _, 2}
  end

  test "many concurrent calls each get their own answer", %{r: r} do
    :ok = Reactor.register(r, "df", "square", fn n -> n * n end)
    :ok = Reactor.register(r, "df", "slow", fn n -> Process.sleep(rem(n, 3)) && n end)

    results =
      1..200
      |> Enum.map(fn lane ->
        Task.async(fn ->
          for i <- 1..20 do
            n = lane * 1000 + i
            {Reactor.call(r, "df", "square", n), Reactor.call(r, "df", "slow", n), n}
          end
        end)
      end)
      |> Task.await_many(60_000)
      |> List.flatten()

    assert length(results) == 4_000

    for {square, slow, n} <- results do
      assert square == {:ok, n * n}
      assert slow == {:ok, n}
    end

    assert %{in_flight: 0, queued: 0} = Reactor.stats(r)
  end

  test "a result never lands in the mailbox of a caller that was not waiting for it", %{r: r} do
    :ok = Reactor.register(r, "df", "echo", fn d -> d end)
    for i <- 1..100, do: assert({:ok, ^i} = Reactor.call(r, "df", "echo", i))
    refute_received {:pf_result, _, _}
    {:messages, messages} = Process.info(self(), :messages)
    assert messages == []
  end

  test "submitting to a reactor that is not running exits like a GenServer call" do
    {:ok, r} = Reactor.start_link()
    :ok = Reactor.stop(r)
    assert {:noproc, {Reactor, :submit, _}} = catch_exit(Reactor.call(r, "df", "x", 1))

    assert {:noproc, {Reactor, :submit, _}} =
             catch_exit(Reactor.call(:no_such_reactor, "df", "x"))

    # A malformed packet is still reported as such first.
    assert_raise ArgumentError, fn ->
      Reactor.submit(r, %{group: "df", element: "x", data: {1}})
    end
  end

  test "stopping the reactor ends its idle workers" do
    {:ok, r} = Reactor.start_link()
    Process.unlink(r)
    test = self()
    :ok = Reactor.register(r, "df", "gate", fn i -> send(test, {:worker, self()}) && i end)

    # 20 calls at once: several workers, all idle afterwards.
    1..20
    |> Enum.map(fn i -> Task.async(fn -> Reactor.call(r, "df", "gate", i) end) end)
    |> Task.await_many()

    workers = for _ <- 1..20, uniq: true, do: assert_receive({:worker, pid}) && pid
    assert Enum.all?(workers, &Process.alive?/1)
    refs = Enum.map(workers, &Process.monitor/1)
    :ok = Reactor.stop(r)
    for ref <- refs, do: assert_receive({:DOWN, ^ref, :process, _, _}, 2_000)
  end

  test "workers idle through a whole trim period end; the pool grows again", %{r: r} do
    test = self()
    :ok = Reactor.register(r, "df", "gate", fn i -> send(test, {:worker, self()}) && i end)
    %{dispatcher: dispatcher} = :sys.get_state(r)

    1..10
    |> Enum.map(fn i -> Task.async(fn -> Reactor.call(r, "df", "gate", i) end) end)
    |> Task.await_many()

    workers = for _ <- 1..10, uniq: true, do: assert_receive({:worker, pid}) && pid
    refs = Enum.map(workers, &Process.monitor/1)
    # The first trim only marks them; the second ends those still idle.
    send(dispatcher, :trim)
    send(dispatcher, :trim)
    for ref <- refs, do: assert_receive({:DOWN, ^ref, :process, _, :normal}, 2_000)
    assert {:ok, 1} = Reactor.call(r, "df", "gate", 1)
    assert_receive {:worker, fresh}
    refute fresh in workers
  end
end
