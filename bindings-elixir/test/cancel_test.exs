defmodule PacketFlow.CancelTest.Slow do
  @moduledoc false
  # A counter whose "hold" turn reports to the test process named in the
  # message and waits for its cancellation notice (or :release).
  use PacketFlow.Actor

  @impl true
  def initial_state, do: %{"value" => 0}

  @impl true
  def handle_message("hold", message, ctx, %{"value" => value}) do
    test = String.to_existing_atom(message["test"])
    id = ctx.packet_id
    send(test, {:turn_started, self(), id})

    receive do
      {:packetflow_cancelled, ^id} ->
        send(test, {:observed, id, PacketFlow.Context.cancelled?(ctx)})

      :release ->
        :ok
    end

    {:reply, "held", %{"value" => value + 100}}
  end

  def handle_message("get", _message, _ctx, state), do: {:reply, state["value"], state}
end

defmodule PacketFlow.CancelTest do
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Actors, Context, Error, Native, Reactor, Result}

  setup do
    %{r: start_reactor!()}
  end

  # A handler that reports `{:started, worker, packet_id}` and waits for
  # its cancellation notice, reported as `{:observed, packet_id,
  # cancelled?}`, or for `:release`.
  defp watching(test) do
    fn data, ctx ->
      id = ctx.packet_id
      send(test, {:started, self(), id})

      receive do
        {:packetflow_cancelled, ^id} -> send(test, {:observed, id, Context.cancelled?(ctx)})
        :release -> :ok
      end

      data
    end
  end

  defp stats_of(r, element) do
    Enum.find(Reactor.stats(r).handlers, &(&1.element == element))
  end

  test "cancel while running: PF499 at once, and the worker is told before cancel returns",
       %{r: r} do
    test = self()

    :ok =
      Reactor.register(r, "df", "hold", fn _data, ctx ->
        id = ctx.packet_id
        send(test, {:started, self(), id})
        # Waits for the test's go-ahead first, so the notice is still in
        # the mailbox when cancel/2 returns.
        receive do: (:go -> :ok)
        cancelled = Context.cancelled?(ctx)
        receive do: ({:packetflow_cancelled, ^id} -> send(test, {:observed, id, cancelled}))
        "late answer"
      end)

    caller = Task.async(fn -> Reactor.call(r, "df", "hold", nil, id: "run-1") end)
    assert_receive {:started, worker, "run-1"}

    assert Reactor.cancel(r, "run-1")
    {:messages, mailbox} = Process.info(worker, :messages)
    assert {:packetflow_cancelled, "run-1"} in mailbox

    assert {:error, %Error{code: "PF499", message: "packet run-1 was cancelled"}} =
             Task.await(caller)

    send(worker, :go)
    assert_receive {:observed, "run-1", true}, 1_000

    refute Reactor.cancel(r, "run-1"), "no longer in flight"
    assert %{count: 1, errors: 1, cancelled: 1} = stats_of(r, "hold")
    assert Reactor.stats(r).in_flight == 0
  end

  test "cancel/2 ends a submit with a PF499 result, and is idempotent while in flight", %{r: r} do
    :ok = Reactor.register(r, "df", "watch", watching(self()))
    caller = Task.async(fn -> Reactor.submit(r, group: "df", element: "watch", id: "sub-1") end)
    assert_receive {:started, _worker, "sub-1"}

    assert Reactor.cancel(r, "sub-1")

    assert {:ok, %Result{status: :error, packet_id: "sub-1", error: %Error{code: "PF499"}}} =
             Task.await(caller)

    assert_receive {:observed, "sub-1", true}, 1_000
    refute Reactor.cancel(r, "sub-1")
  end

  test "cancel before start: an unknown id is not remembered, a queued packet never runs" do
    r = start_reactor!(max_inflight: 1)
    runs = :counters.new(1, [])
    test = self()

    :ok =
      Reactor.register(r, "df", "one", fn data, _ctx ->
        :counters.add(runs, 1, 1)
        send(test, {:started, self(), data})
        if data == "first", do: receive(do: (:release -> :ok))
        data
      end)

    refute Reactor.cancel(r, "later")
    refute Reactor.cancel(r, ""), "not a packet id at all"
    assert {:ok, "later"} = Reactor.call(r, "df", "one", "later", id: "later")

    first = Task.async(fn -> Reactor.call(r, "df", "one", "first") end)
    assert_receive {:started, worker, "first"}
    queued = Task.async(fn -> Reactor.call(r, "df", "one", "queued", id: "queued") end)
    wait_until(fn -> Reactor.stats(r).queued == 1 end, 2_000, "the packet to queue")

    assert Reactor.cancel(r, "queued")
    assert {:error, %Error{code: "PF499"}} = Task.await(queued)
    assert Reactor.stats(r).queued == 0

    send(worker, :release)
    assert {:ok, "first"} = Task.await(first)
    assert {:ok, "third"} = Reactor.call(r, "df", "one", "third")
    # later, first, third: the cancelled packet never ran.
    assert :counters.get(runs, 1) == 3
    assert %{cancelled: 1} = stats_of(r, "one")
  end

  test "a caller that exits cancels its packet; the handler is told and nothing stays in flight",
       %{r: r} do
    :ok = Reactor.register(r, "df", "watch", watching(self()))
    {caller, ref} = spawn_monitor(fn -> Reactor.call(r, "df", "watch", nil, id: "orphan") end)
    assert_receive {:started, _worker, "orphan"}

    Process.exit(caller, :kill)
    assert_receive {:DOWN, ^ref, :process, ^caller, :killed}
    assert_receive {:observed, "orphan", true}, 1_000

    wait_until(fn -> Reactor.stats(r).in_flight == 0 end, 2_000, "in flight to return to 0")
    assert %{cancelled: 1} = stats_of(r, "watch")
  end

  test "a caller that exits cancels its actor message", %{r: r} do
    :ok = Actors.register(r, "slow", PacketFlow.CancelTest.Slow)
    name = register_test_process()
    actor = %PacketFlow.ActorRef{type: "slow", id: "a1"}

    {caller, ref} =
      spawn_monitor(fn ->
        Actors.send(r, actor, %{type: "hold", test: name}, id: "orphan-msg")
      end)

    assert_receive {:turn_started, _worker, "orphan-msg"}
    Process.exit(caller, :kill)
    assert_receive {:DOWN, ^ref, :process, ^caller, :killed}
    assert_receive {:observed, "orphan-msg", true}, 1_000

    # The turn was abandoned: the actor keeps the state it had.
    assert {:ok, 0} = Actors.send(r, actor, %{type: "get"})
    wait_until(fn -> Reactor.stats(r).in_flight == 0 end, 2_000, "in flight to return to 0")
  end

  test "a waiting caller that garbage collects keeps its packet", %{r: r} do
    :ok = Reactor.register(r, "df", "watch", watching(self()))
    test = self()

    caller =
      spawn(fn -> send(test, {:answer, Reactor.call(r, "df", "watch", "kept", id: "kept")}) end)

    assert_receive {:started, worker, "kept"}
    for _ <- 1..3, do: :erlang.garbage_collect(caller)
    refute_receive {:observed, "kept", _}
    send(worker, :release)
    assert_receive {:answer, {:ok, "kept"}}
  end

  test "a process that stopped waiting has that packet cancelled by its next submit", %{r: r} do
    :ok = Reactor.register(r, "df", "watch", watching(self()))
    :ok = Reactor.register(r, "df", "echo", fn data -> data end)
    # What a caught timeout leaves behind: a submit nobody waits for.
    tag = make_ref()
    packet = %{group: "df", element: "watch", id: "given-up"}
    assert {:pending, _} = Native.reactor_submit(r, packet, tag, Reactor.submitter())
    assert_receive {:started, _worker, "given-up"}

    assert {:ok, "next"} = Reactor.call(r, "df", "echo", "next")
    assert_receive {:observed, "given-up", true}, 1_000
    refute_received {:pf_result, ^tag, _}
  end

  test "cancelling the first of a chain reaches the handler it called", %{r: r} do
    test = self()
    :ok = Reactor.register(r, "df", "second", watching(test))

    :ok =
      Reactor.register(r, "df", "first", fn _data, ctx ->
        id = ctx.packet_id
        answer = Context.call(ctx, "df", "second", "down")
        send(test, {:child_answer, answer})
        receive do: ({:packetflow_cancelled, ^id} -> send(test, {:observed, id, true}))
        "late"
      end)

    caller = Task.async(fn -> Reactor.call(r, "df", "first", nil, id: "top") end)
    assert_receive {:started, _worker, child_id}

    assert Reactor.cancel(r, "top")
    assert {:error, %Error{code: "PF499"}} = Task.await(caller)
    assert_receive {:observed, ^child_id, true}, 1_000
    assert_receive {:child_answer, {:error, %Error{code: "PF499"}}}, 1_000
    assert_receive {:observed, "top", true}, 1_000

    wait_until(fn -> Reactor.stats(r).in_flight == 0 end, 2_000, "in flight to return to 0")
    assert %{cancelled: 1} = stats_of(r, "first")
    assert %{cancelled: 1} = stats_of(r, "second")
  end

  test "an actor's handle_message is told when its message is cancelled", %{r: r} do
    :ok = Actors.register(r, "slow", PacketFlow.CancelTest.Slow)
    name = register_test_process()
    actor = %PacketFlow.ActorRef{type: "slow", id: "a2"}

    sender = Task.async(fn -> Actors.send(r, actor, %{type: "hold", test: name}, id: "msg-1") end)

    assert_receive {:turn_started, _worker, "msg-1"}
    assert Reactor.cancel(r, "msg-1")
    assert {:error, %Error{code: "PF499"}} = Task.await(sender)
    assert_receive {:observed, "msg-1", true}, 1_000
    assert {:ok, 0} = Actors.send(r, actor, %{type: "get"})
  end

  test "a handler past its deadline is told too", %{r: r} do
    :ok = Reactor.register(r, "df", "watch", watching(self()))

    assert {:error, %Error{code: "PF408"}} =
             Reactor.call(r, "df", "watch", nil, id: "late", timeout_ms: 100)

    assert_receive {:observed, "late", true}, 1_000
  end

  test "a worker that starts after its call was cancelled is told at once", %{r: r} do
    :ok = Reactor.register(r, "df", "watch", watching(self()))
    dispatcher = dispatcher_of(r)
    # With no idle worker, the call goes to the dispatcher, which starts
    # one: held here until the packet is cancelled.
    :ok = :sys.suspend(dispatcher)
    caller = Task.async(fn -> Reactor.call(r, "df", "watch", nil, id: "unstarted") end)
    wait_until(fn -> Reactor.stats(r).in_flight == 1 end, 2_000, "the packet to start")
    assert Reactor.cancel(r, "unstarted")
    assert {:error, %Error{code: "PF499"}} = Task.await(caller)

    :ok = :sys.resume(dispatcher)
    assert_receive {:started, _worker, "unstarted"}
    assert_receive {:observed, "unstarted", true}, 1_000
  end

  test "a worker never sees a notice meant for its previous call", %{r: r} do
    test = self()
    stale = :counters.new(1, [])

    :ok =
      Reactor.register(r, "df", "step", fn data, ctx ->
        # A notice for another packet, in the mailbox or arriving during
        # this call (watched for a millisecond), is stale.
        own = ctx.packet_id

        receive do
          {:packetflow_cancelled, id} when id != own -> :counters.add(stale, 1, 1)
        after
          1 -> :ok
        end

        if data == "hold" do
          send(test, {:holding, self(), ctx.packet_id})
          # Returns when told to, without looking for its own notice.
          receive do: (:go -> :ok)
        end

        data
      end)

    # Other callers keep taking whichever worker is idle, while the cancel
    # of a held call races with its handler's answer: whichever wins, no
    # handler finds a notice that is not its own.
    background =
      for _ <- 1..3 do
        Task.async(fn ->
          for _ <- 1..300, do: {:ok, "bg"} = Reactor.call(r, "df", "step", "bg")
        end)
      end

    for i <- 1..100 do
      id = "race-#{i}"
      caller = Task.async(fn -> Reactor.call(r, "df", "step", "hold", id: id) end)
      assert_receive {:holding, worker, ^id}
      canceller = Task.async(fn -> Reactor.cancel(r, id) end)
      send(worker, :go)
      Task.await(canceller)
      assert {_, _} = Task.await(caller)
    end

    Enum.each(background, &Task.await(&1, 30_000))
    assert :counters.get(stale, 1) == 0
  end

  test "ctx.call inherits the caller's priority unless it names one", %{r: r} do
    test = self()

    :ok =
      Reactor.register(r, "df", "report", fn _data, ctx ->
        send(test, {:priority, Context.priority(ctx)})
        :ok
      end)

    :ok =
      Reactor.register(r, "df", "parent", fn _data, ctx ->
        send(test, {:priority, Context.priority(ctx)})
        {:ok, _} = Context.call(ctx, "df", "report")
        {:ok, _} = Context.call(ctx, "df", "report", nil, priority: 2)
        send(test, {:refused, Context.call(ctx, "df", "report", nil, priority: 11)})

        send(test, {:high, Context.call(ctx, "df", "report", nil, priority: "high")})
        send(test, {:both, Context.call(ctx, "df", "no spaces", nil, priority: 11)})
        send(test, {:raised, catch_error(Context.call(ctx, "df", "report", nil, colour: 1))})

        :ok
      end)

    assert {:ok, "ok"} = Reactor.call(r, "df", "parent", nil, priority: 8)
    assert_receive {:priority, 8}
    assert_receive {:priority, 8}
    assert_receive {:priority, 2}
    assert_receive {:refused, {:error, %Error{code: "PF400", message: message}}}
    assert message =~ "priority"
    assert_receive {:high, {:error, %Error{code: "PF400", message: message}}}
    assert message == ~s(priority must be an integer 1-10, got "high")
    # A bad key and a bad option: the key is named, as the call judges it.
    assert_receive {:both, {:error, %Error{code: "PF400", message: message}}}
    assert message =~ ~r/^element must be 1-64 characters/
    assert_receive {:raised, %ArgumentError{message: message}}
    assert message =~ "colour"
  end

  test "over the network: cancelling a forwarded packet, or its caller exiting, reaches the peer's handler" do
    server = start_reactor!()
    :ok = Reactor.register(server, "df", "remote", watching(self()))
    {:ok, %{url: url}} = Reactor.listen(server, "127.0.0.1:0")
    client = start_reactor!()
    :ok = Reactor.connect(client, url)

    caller = Task.async(fn -> Reactor.call(client, "df", "remote", nil, id: "wire-1") end)
    assert_receive {:started, _worker, "wire-1"}
    assert Reactor.cancel(client, "wire-1")
    assert {:error, %Error{code: "PF499"}} = Task.await(caller)
    assert_receive {:observed, "wire-1", true}, 1_000

    {orphan, ref} =
      spawn_monitor(fn -> Reactor.call(client, "df", "remote", nil, id: "wire-2") end)

    assert_receive {:started, _worker, "wire-2"}
    Process.exit(orphan, :kill)
    assert_receive {:DOWN, ^ref, :process, ^orphan, :killed}
    assert_receive {:observed, "wire-2", true}, 1_000

    wait_until(
      fn -> Reactor.stats(server).in_flight == 0 end,
      2_000,
      "the server's in flight to be 0"
    )

    assert %{cancelled: 2} = stats_of(server, "remote")

    wait_until(
      fn -> Reactor.stats(client).in_flight == 0 end,
      2_000,
      "the client's in flight to be 0"
    )

    assert Reactor.stats(client).forwards_cancelled == 2
  end

  test "cancel/2 on a reactor that is not running exits like a GenServer call" do
    assert {:noproc, _} = catch_exit(Reactor.cancel(:no_such_reactor, "x"))
  end

  # Registers the test process under a fresh name (actor messages carry
  # JSON, so a turn finds the test by name).
  defp register_test_process do
    name = :"cancel_test_#{System.unique_integer([:positive])}"
    Process.register(self(), name)
    Atom.to_string(name)
  end
end
