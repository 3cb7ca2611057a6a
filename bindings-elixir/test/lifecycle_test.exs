defmodule PacketFlow.LifecycleTest do
  @moduledoc "Concurrency, supervision and freeing native resources."
  # Not async: it counts native resources, which other tests create too.
  use ExUnit.Case, async: false
  import PacketFlow.TestHelpers

  alias PacketFlow.{Native, Reactor}

  test "1,000 concurrent submits from many processes are all answered" do
    r = start_reactor!()
    :ok = Reactor.register(r, "df", "square", fn n, _ -> n * n end)

    tasks =
      for i <- 1..1_000 do
        Task.async(fn -> {i, Reactor.call(r, "df", "square", i)} end)
      end

    results = Task.await_many(tasks, 30_000)
    assert length(results) == 1_000
    for {i, answer} <- results, do: assert(answer == {:ok, i * i})
  end

  test "10 processes with 100 submits each, through one reactor" do
    r = start_reactor!(max_inflight: 16)
    :ok = Reactor.register(r, "co", "id", fn d -> d end)

    tasks =
      for p <- 1..10 do
        Task.async(fn ->
          for i <- 1..100,
              do: {:ok, %{"p" => ^p, "i" => ^i}} = Reactor.call(r, "co", "id", %{p: p, i: i})
        end)
      end

    Task.await_many(tasks, 30_000)
    assert [%{count: 1_000, errors: 0}] = Reactor.stats(r).handlers
  end

  test "stopping a reactor frees its native resources and ends its handler tasks" do
    before = settled_reactors!()
    {:ok, r} = Reactor.start_link()
    assert Native.live_reactors() == before + 1
    test = self()
    :ok = Reactor.register(r, "df", "hold", blocking_handler(test))
    Process.unlink(r)
    caller = Task.async(fn -> Reactor.call(r, "df", "hold", 1) end)
    {task_pid, 1} = receive_started!()
    ref = Process.monitor(task_pid)

    :ok = Reactor.stop(r)
    assert {:error, %PacketFlow.Error{code: "PF503"}} = Task.await(caller)
    assert_receive {:DOWN, ^ref, :process, ^task_pid, _}, 2_000
    refute Process.alive?(r)

    wait_until(
      fn -> Native.live_reactors() == before end,
      2_000,
      "the reactor resource to be freed"
    )

    wait_until(fn -> Native.live_invocations() == 0 end, 2_000, "invocations to be freed")
  end

  test "a supervisor shutting down stops its reactors" do
    before = settled_reactors!()

    {:ok, sup} =
      Supervisor.start_link([{Reactor, name: :sup_reactor_a}, {Reactor, name: :sup_reactor_b}],
        strategy: :one_for_one
      )

    assert Native.live_reactors() == before + 2
    :ok = Reactor.register(:sup_reactor_a, "df", "x", fn d -> d end)
    assert {:ok, 1} = Reactor.call(:sup_reactor_a, "df", "x", 1)
    :ok = Supervisor.stop(sup)
    assert GenServer.whereis(:sup_reactor_a) == nil

    wait_until(
      fn -> Native.live_reactors() == before end,
      2_000,
      "both reactor resources to be freed"
    )
  end

  @tag :capture_log
  test "a reactor killed outright still frees its native reactor" do
    before = settled_reactors!()
    {:ok, r} = Reactor.start_link()
    Process.unlink(r)
    # Its only link left is its dispatcher (reading its state instead would
    # copy the native reactor into this process and keep it alive).
    {:links, [dispatcher]} = Process.info(r, :links)
    refs = {Process.monitor(r), Process.monitor(dispatcher)}
    Process.exit(r, :kill)
    assert_receive {:DOWN, ref, :process, ^r, :killed} when ref == elem(refs, 0)
    # Its dispatcher follows it (and logs why, captured here).
    assert_receive {:DOWN, ref, :process, ^dispatcher, :killed} when ref == elem(refs, 1)

    wait_until(
      fn -> Native.live_reactors() == before end,
      2_000,
      "the reactor resource to be freed"
    )
  end

  test "the reactor's GenServer stays responsive while handlers run" do
    r = start_reactor!()
    :ok = Reactor.register(r, "df", "hold", blocking_handler(self()))
    holders = for i <- 1..50, do: Task.async(fn -> Reactor.call(r, "df", "hold", i) end)
    pids = for _ <- 1..50, do: elem(receive_started!(), 0)
    # 50 handlers are busy; the reactor still answers at once.
    assert %{in_flight: 50} = Reactor.stats(r)
    Enum.each(pids, &send(&1, :release))

    assert Enum.sort(Enum.map(Task.await_many(holders), fn {:ok, v} -> v end)) ==
             Enum.to_list(1..50)
  end
end
