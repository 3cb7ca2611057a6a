ExUnit.start()

defmodule PacketFlow.TestHelpers do
  @moduledoc false
  import ExUnit.Assertions

  alias PacketFlow.Reactor

  @doc "Starts a reactor owned by the test (stopped when the test ends)."
  def start_reactor!(opts \\ []) do
    ExUnit.Callbacks.start_supervised!({Reactor, opts}, id: make_ref())
  end

  @doc """
  Waits until `check` returns a truthy value, re-checking every millisecond,
  and fails the test after `timeout_ms`.
  """
  def wait_until(check, timeout_ms \\ 2_000, what \\ "condition") do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_wait(check, deadline, what)
  end

  defp do_wait(check, deadline, what) do
    case check.() do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline,
          do: flunk("timed out waiting for #{what}")

        receive do
        after
          1 -> do_wait(check, deadline, what)
        end
    end
  end

  @doc "A handler that reports `{:started, pid, data}` to `test` and waits for `:release`."
  def blocking_handler(test) do
    fn data, _ctx ->
      send(test, {:started, self(), data})

      receive do
        :release -> data
      after
        10_000 -> "never released"
      end
    end
  end

  def receive_started!(timeout \\ 2_000) do
    receive do
      {:started, pid, data} -> {pid, data}
    after
      timeout -> flunk("the handler did not start")
    end
  end
end
