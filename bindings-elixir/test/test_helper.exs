# An expected message may take longer than ExUnit's default 100 ms on a
# loaded two-core machine: `assert_receive` waits for it up to 5 s (it
# returns as soon as the message is there). `refute_receive` keeps its
# short default.
ExUnit.start(assert_receive_timeout: 5_000)

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

  @doc """
  The number of native reactors once those of earlier tests are freed: 0
  (for tests that are not async, so nothing else makes reactors
  meanwhile). A process that ends releases its references to native
  resources after it has told its monitors, so a reactor of the previous
  test may still be counted for a moment.
  """
  def settled_reactors! do
    wait_until(
      fn -> PacketFlow.Native.live_reactors() == 0 end,
      5_000,
      "earlier reactors to be freed"
    )

    0
  end

  @doc """
  The dispatcher process of reactor `r`, found among its links (reading the
  reactor's state instead would copy its native reactor into the caller and
  keep it alive as long as the caller, which the tests counting native
  resources would see).
  """
  def dispatcher_of(r) do
    {:links, links} = Process.info(GenServer.whereis(r), :links)

    Enum.find(links, fn pid ->
      is_pid(pid) and
        match?(
          {:dictionary, %{"$initial_call": {PacketFlow.Reactor.Dispatcher, :init, 1}}},
          with({:dictionary, d} <- Process.info(pid, :dictionary), do: {:dictionary, Map.new(d)})
        )
    end) || flunk("no dispatcher among the reactor's links")
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

  @doc "A fresh temporary folder, removed when the test ends."
  def temp_dir! do
    dir = Path.join(System.tmp_dir!(), "packetflow-test-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    ExUnit.Callbacks.on_exit(fn -> File.rm_rf(dir) end)
    dir
  end

  @doc """
  Makes TLS files in `dir` with openssl (scripts/test.sh installs it): a CA
  made for this run and a certificate it issued for 127.0.0.1 and
  localhost, with its key (P-256: quick to make). Returns
  `%{ca: path, cert: path, key: path}`; `name` prefixes the files.
  """
  def make_tls!(dir, name \\ "node") do
    file = fn f -> Path.join(dir, "#{name}-#{f}") end
    ec = ~w(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)

    openssl!(
      ["req", "-x509"] ++
        ec ++
        [
          "-keyout",
          file.("ca.key"),
          "-out",
          file.("ca.pem"),
          "-days",
          "2",
          "-subj",
          "/CN=#{name} test CA"
        ]
    )

    openssl!(
      ["req"] ++
        ec ++ ["-keyout", file.("node.key"), "-out", file.("node.csr"), "-subj", "/CN=127.0.0.1"]
    )

    File.write!(file.("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    openssl!(
      ~w(x509 -req -in #{file.("node.csr")} -CA #{file.("ca.pem")} -CAkey #{file.("ca.key")} -CAcreateserial) ++
        ["-out", file.("node.crt"), "-days", "2", "-extfile", file.("ext.cnf")]
    )

    %{ca: file.("ca.pem"), cert: file.("node.crt"), key: file.("node.key")}
  end

  defp openssl!(args) do
    case System.cmd("openssl", args, stderr_to_stdout: true) do
      {_, 0} -> :ok
      {out, status} -> flunk("openssl #{Enum.join(args, " ")} failed (#{status}): #{out}")
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
