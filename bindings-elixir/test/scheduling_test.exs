defmodule PacketFlow.SchedulingTest do
  @moduledoc """
  Packets that wait (for a slot, for a dependency) and packets whose
  deadline passes: these continue on the runtime's own thread rather than
  inside the NIF that started them, so both paths are exercised here.
  """
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Error, Reactor, Result}

  test "a packet waiting on a dependency runs once it succeeds" do
    r = start_reactor!()
    :ok = Reactor.register(r, "cf", "first", blocking_handler(self()))
    :ok = Reactor.register(r, "cf", "second", fn d -> "after #{d}" end)

    first =
      Task.async(fn ->
        Reactor.submit(r, %{group: "cf", element: "first", data: 1, id: "first"})
      end)

    {pid, 1} = receive_started!()

    second =
      Task.async(fn -> Reactor.call(r, "cf", "second", "first", dependencies: ["first"]) end)

    wait_until(
      fn -> Reactor.stats(r).in_flight == 2 end,
      2_000,
      "the dependent packet to be accepted"
    )

    refute Task.yield(second, 0)

    send(pid, :release)
    assert {:ok, %Result{status: :success}} = Task.await(first)
    assert {:ok, "after first"} = Task.await(second)
  end

  test "a packet waiting on a dependency that fails is answered PF424" do
    r = start_reactor!()
    test = self()

    :ok =
      Reactor.register(r, "cf", "doomed", fn _ ->
        send(test, {:started, self(), nil})
        receive do: (:fail -> raise("failed on purpose"))
      end)

    :ok = Reactor.register(r, "cf", "never", fn _ -> send(test, :dependent_ran) end)

    doomed =
      Task.async(fn -> Reactor.submit(r, %{group: "cf", element: "doomed", id: "doomed"}) end)

    {pid, nil} = receive_started!()

    waiting =
      Task.async(fn ->
        Reactor.submit(r, %{group: "cf", element: "never", dependencies: ["doomed"]})
      end)

    wait_until(
      fn -> Reactor.stats(r).in_flight == 2 end,
      2_000,
      "the dependent packet to be accepted"
    )

    send(pid, :fail)
    assert {:ok, %Result{error: %Error{code: "PF500"}}} = Task.await(doomed)
    assert {:ok, %Result{error: %Error{code: "PF424"}}} = Task.await(waiting)
    refute_received :dependent_ran
  end

  test "a slot freed by a timed-out packet goes to the next one" do
    r = start_reactor!(max_inflight: 1)
    :ok = Reactor.register(r, "rm", "stuck", blocking_handler(self()))
    :ok = Reactor.register(r, "rm", "next", fn d -> d * 10 end)

    stuck = Task.async(fn -> Reactor.call(r, "rm", "stuck", 1, timeout_ms: 100) end)
    {stuck_pid, 1} = receive_started!()
    queued = Task.async(fn -> Reactor.call(r, "rm", "next", 7, timeout_ms: 5_000) end)

    assert {:error, %Error{code: "PF408"}} = Task.await(stuck)
    assert {:ok, 70} = Task.await(queued)

    # The stuck handler answers late: the answer is dropped, nothing breaks.
    send(stuck_pid, :release)
    assert {:ok, 30} = Reactor.call(r, "rm", "next", 3)
  end

  test "a packet that waits too long in the queue is answered PF408" do
    r = start_reactor!(max_inflight: 1)
    :ok = Reactor.register(r, "rm", "hold", blocking_handler(self()))
    holder = Task.async(fn -> Reactor.call(r, "rm", "hold", 1) end)
    {pid, 1} = receive_started!()

    assert {:error, %Error{code: "PF408", message: message}} =
             Reactor.call(r, "rm", "hold", 2, timeout_ms: 50)

    assert message =~ "queue"
    send(pid, :release)
    assert {:ok, 1} = Task.await(holder)
  end

  test "a burst through a narrow reactor: every packet answered exactly once" do
    r = start_reactor!(max_inflight: 4, max_queue: 10_000)

    :ok =
      Reactor.register(r, "co", "work", fn
        %{"slow" => true} = d -> receive(do: (:never -> d), after: (200 -> d))
        d -> d
      end)

    tasks =
      for p <- 1..40 do
        Task.async(fn ->
          for i <- 1..50 do
            slow = rem(i, 25) == 0
            timeout = if slow, do: 20, else: 10_000

            {p, i, slow,
             Reactor.call(r, "co", "work", %{"p" => p, "i" => i, "slow" => slow},
               timeout_ms: timeout
             )}
          end
        end)
      end

    results = tasks |> Task.await_many(60_000) |> List.flatten()
    assert length(results) == 2_000

    for {p, i, slow, answer} <- results do
      if slow do
        assert {:error, %Error{code: "PF408"}} = answer
      else
        assert {:ok, %{"p" => ^p, "i" => ^i}} = answer
      end
    end

    wait_until(fn -> Reactor.stats(r).in_flight == 0 end, 2_000, "nothing in flight")
  end
end
