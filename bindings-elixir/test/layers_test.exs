defmodule PacketFlow.LayersTest do
  # The NIF's lower layers driven alone, through its probe NIFs: the
  # executor with futures of the test's own (no reactor, no handler), and
  # the worker pool with plain terms (no handler calls).
  use ExUnit.Case, async: true

  alias PacketFlow.Native

  describe "exec: a job is polled where it is woken" do
    test "woken inside a NIF, it delivers before that NIF returns, without its home" do
      home = Native.probe_home()
      triggers = for tag <- 1..20, do: Native.probe_job(home, tag)
      refute_received {:pf_probe, _, _}

      :ok = Native.probe_fire(triggers, 42)

      # Already in the mailbox: sent by the NIF itself, not by another thread.
      for tag <- 1..20, do: assert_received({:pf_probe, ^tag, 42})
      refute_received :pf_route
    end

    test "woken off the schedulers, it waits for its home, which is woken once for all" do
      home = Native.probe_home()
      triggers = for tag <- 1..50, do: Native.probe_job(home, tag)

      :ok = Native.probe_fire_later(triggers, 7)
      assert_receive {:pf_probe, :fired}, 2_000

      # Every job is woken by now; none has run, and one wake-up came.
      assert_received :pf_route
      refute_received :pf_route
      refute_received {:pf_probe, _, _}

      :ok = Native.probe_home_run(home)
      for tag <- 1..50, do: assert_received({:pf_probe, ^tag, 7})
      refute_received {:pf_probe, _, _}
    end

    test "woken while it is being polled, it is polled again at once" do
      home = Native.probe_home()
      assert {:done, 5} = Native.probe_job_woken_while_polled(home, 5)
      refute_received :pf_route
    end

    test "whose home's process is gone, it still runs and delivers" do
      test = self()

      {owner, ref} =
        spawn_monitor(fn ->
          send(test, {:home, Native.probe_home()})
        end)

      assert_receive {:home, home}
      assert_receive {:DOWN, ^ref, :process, ^owner, :normal}

      trigger = Native.probe_job(home, 9)
      :ok = Native.probe_fire_later([trigger], 3)
      assert_receive {:pf_probe, 9, 3}, 2_000
    end
  end

  describe "pool: calls go to idle workers only" do
    # A process that joins the pool's idle stack, then reports the one call
    # it receives (or ends after a while).
    defp worker(pool) do
      test = self()

      pid =
        spawn_link(fn ->
          :ok = Native.probe_pool_push(pool)
          send(test, {:idle, self()})

          receive do
            {:pf_probe, call} -> send(test, {:got, self(), call})
          after
            5_000 -> :ok
          end
        end)

      assert_receive {:idle, ^pid}
      pid
    end

    test "with no idle worker, calls go to the dispatcher in one message" do
      pool = Native.pool_new()
      :ok = Native.probe_pool_route(pool, [:a, %{"b" => [1, 2]}, "c"])
      assert_received {:pf_calls, [:a, %{"b" => [1, 2]}, "c"]}
    end

    test "the most recently idle worker first, each worker one call, the rest spill" do
      pool = Native.pool_new()
      first = worker(pool)
      second = worker(pool)
      assert Native.pool_idle(pool) == 2

      :ok = Native.probe_pool_route(pool, [:x, :y, :z])

      assert_receive {:got, ^second, :x}
      assert_receive {:got, ^first, :y}
      assert_received {:pf_calls, [:z]}
      assert Native.pool_idle(pool) == 0
    end

    test "an idle worker that is gone is skipped" do
      pool = Native.pool_new()
      live = worker(pool)
      test = self()

      {dead, ref} =
        spawn_monitor(fn ->
          :ok = Native.probe_pool_push(pool)
          send(test, :pushed)
        end)

      assert_receive :pushed
      assert_receive {:DOWN, ^ref, :process, ^dead, :normal}

      :ok = Native.probe_pool_route(pool, [:only])
      assert_receive {:got, ^live, :only}
      refute_received {:pf_calls, _}
    end

    test "a trim takes the workers idle since the previous one" do
      pool = Native.pool_new()
      early = worker(pool)
      assert Native.pool_trim(pool) == []
      late = worker(pool)
      assert Native.pool_trim(pool) == [early]
      assert Native.pool_idle(pool) == 1
      assert Native.pool_trim(pool) == [late]
      assert Native.pool_idle(pool) == 0
      assert Native.pool_forget(pool, late) == false
    end
  end
end
