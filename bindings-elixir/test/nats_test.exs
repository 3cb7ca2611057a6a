defmodule PacketFlow.NatsTest do
  @moduledoc """
  Reactors on NATS (docs/protocol.md, "NATS"): `connect/3` with a `nats://`
  URL and the NATS options, against a real nats-server on loopback.
  """
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Error, Reactor, Result}

  # A real nats-server on a free loopback port (with `args` added), ready
  # for clients when this returns, killed when the test ends: `{url, port}`.
  # With `jetstream: true`, JetStream is on, its store in a temporary folder.
  defp nats_server!(args \\ [], opts \\ []) do
    port = free_port()
    args = if opts[:jetstream], do: ["-js", "-sd", temp_dir!() | args], else: args

    server =
      Port.open({:spawn_executable, nats_server_bin()}, [
        :binary,
        :stderr_to_stdout,
        :exit_status,
        args: ["-a", "127.0.0.1", "-p", Integer.to_string(port) | args]
      ])

    {:os_pid, os_pid} = Port.info(server, :os_pid)
    on_exit(fn -> System.cmd("kill", ["-KILL", Integer.to_string(os_pid)]) end)
    await_ready(server, "")
    {"nats://127.0.0.1:#{port}", port}
  end

  # Reads the server's log until it says it is ready (bounded).
  defp await_ready(server, seen) do
    receive do
      {^server, {:data, chunk}} ->
        seen = seen <> chunk
        if seen =~ "Server is ready", do: :ok, else: await_ready(server, seen)

      {^server, {:exit_status, status}} ->
        flunk("nats-server exited (#{status}) while starting: #{seen}")
    after
      15_000 -> flunk("nats-server was not ready within 15 s: #{seen}")
    end
  end

  # NATS_SERVER_BIN, else nats-server on the PATH or in /usr/sbin
  # (scripts/test.sh installs it through scripts/ensure-nats-server.sh).
  defp nats_server_bin do
    System.get_env("NATS_SERVER_BIN") || System.find_executable("nats-server") ||
      Enum.find(["/usr/sbin/nats-server", "/usr/local/sbin/nats-server"], &File.exists?/1) ||
      flunk("nats-server not found: run scripts/ensure-nats-server.sh or set NATS_SERVER_BIN")
  end

  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)
    port
  end

  test "a handler is called from another reactor through nats-server" do
    {url, port} = nats_server!()
    serving = start_reactor!(reactor_name: "serving")

    :ok =
      Reactor.register(serving, "df", "upper", fn data, ctx ->
        %{"upper" => String.upcase(data), "trace" => ctx.metadata["trace"]}
      end)

    assert :ok = Reactor.connect(serving, url, namespace: "ex-test", name: "elixir serving")
    asking = start_reactor!(reactor_name: "asking")
    assert :ok = Reactor.connect(asking, url, namespace: "ex-test", connect_timeout_ms: 2_000)

    assert {:ok, %Result{status: :success, data: data}} =
             Reactor.submit(asking, %{
               group: "df",
               element: "upper",
               data: "over nats",
               metadata: %{"trace" => "t-1"},
               timeout_ms: 5_000
             })

    assert data == %{"upper" => "OVER NATS", "trace" => "t-1"}
    assert {:error, %Error{code: "PF001"}} = Reactor.call(asking, "df", "missing", nil)

    server = "127.0.0.1:#{port}"

    assert %{
             state: "connected",
             server: ^server,
             requests_sent: 2,
             rtt_us: rtt,
             # joined without membership
             members: nil
           } = Reactor.stats(asking).nats

    assert rtt > 0
    assert %{requests_served: 1, served_keys: 1} = Reactor.stats(serving).nats
  end

  test "the :connect option of start_link joins NATS before it returns" do
    {url, _port} = nats_server!()
    serving = start_reactor!()
    :ok = Reactor.register(serving, "df", "twice", fn n -> n * 2 end)
    :ok = Reactor.connect(serving, url)
    asking = start_reactor!(connect: [{url, connect_timeout_ms: 2_000}])
    assert {:ok, 42} = Reactor.call(asking, "df", "twice", 21)
  end

  test "a reactor off NATS shows nats: nil" do
    assert Reactor.stats(start_reactor!()).nats == nil
  end

  test "a bad option is PF400 naming it" do
    r = start_reactor!()
    url = "nats://127.0.0.1:4222"

    # Judged before any server is dialled: no server is needed.
    cases = [
      {[namespace: "a.*"], ~r/^namespace must be/},
      {[user: "pf"], ~r/^user and password must be given together/},
      {[tls_cert: "/nonexistent/c.pem"], ~r/^tls_cert and tls_key must be given together/},
      {[tls_ca: "/nonexistent/ca.pem"], ~r{^tls_ca /nonexistent/ca\.pem}},
      {[credentials_file: "/nonexistent/x.creds"], ~r{^credentials_file /nonexistent/x\.creds}},
      {[connect_timeout_ms: 0], ~r/^connect_timeout_ms must be at least 1/},
      {[msgpack: true], ~r/^msgpack is an option of WebSocket peers/},
      {[membership: true, membership_heartbeat_ms: 0],
       ~r/^membership_heartbeat_ms must be from 10 to 60000 ms, got 0 ms/},
      {[actor_store: true, membership_heartbeat_ms: 60_001],
       ~r/^membership_heartbeat_ms must be from 10 to 60000 ms/},
      {[membership_heartbeat_ms: 250],
       ~r/^membership_heartbeat_ms is the heartbeat of membership: give membership \(or actor_store\) too/}
    ]

    for {opts, message} <- cases do
      assert {:error, %Error{code: "PF400", message: got}} = Reactor.connect(r, url, opts)
      assert got =~ message, "#{inspect(opts)}: #{got}"
    end

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.connect(r, "ws://127.0.0.1:1/packetflow/v1", nkey_seed: "SU")

    assert message =~ ~r{^nkey_seed is an option of NATS URLs \(nats://, tls://\), not of ws://}

    assert_raise ArgumentError, ~r/^password must be a string, got an integer/, fn ->
      Reactor.connect(r, url, user: "pf", password: 1234)
    end

    assert_raise ArgumentError, ~r/^require_tls must be a boolean/, fn ->
      Reactor.connect(r, url, require_tls: "yes")
    end

    assert_raise ArgumentError, ~r/^connect_timeout_ms must be a non-negative integer/, fn ->
      Reactor.connect(r, url, connect_timeout_ms: -1)
    end

    assert_raise ArgumentError, ~r/^membership_heartbeat_ms must be a non-negative integer/, fn ->
      Reactor.connect(r, url, membership: true, membership_heartbeat_ms: 2.5)
    end

    assert_raise ArgumentError, ~r/^actor_store must be a boolean/, fn ->
      Reactor.connect(r, url, actor_store: "bucket")
    end

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.connect(r, "ws://127.0.0.1:1/packetflow/v1", membership: true)

    assert message =~ ~r/^membership is an option of NATS URLs/

    assert Reactor.stats(r).nats == nil
  end

  test "actor_store on a reactor with a file store is PF400 naming it" do
    r = start_reactor!(actor_store: Path.join(temp_dir!(), "actors.db"))

    # Judged before any server is dialled: the actor types would be split
    # between two stores.
    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.connect(r, "nats://127.0.0.1:4222", actor_store: true)

    assert message =~ ~r/^actor_store: actor types are registered with another store/
  end

  # The `GET /health` document of a reactor listening on `port` (the core
  # answers with a content-length and closes the connection).
  defp health!(port) do
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 5_000)
    :ok = :gen_tcp.send(socket, "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    response = read_all!(socket, "")
    [head, body] = String.split(response, "\r\n\r\n", parts: 2)
    assert head =~ ~r{^HTTP/1.1 200}
    PacketFlow.JSON.decode!(body)
  end

  defp read_all!(socket, seen) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, chunk} -> read_all!(socket, seen <> chunk)
      {:error, :closed} -> seen
    end
  end

  # `nats.membership` of the reactor listening on `port` once it lists
  # exactly `members`.
  defp membership_showing!(port, members) do
    wanted = Enum.sort(members)

    wait_until(
      fn ->
        seen = health!(port)["nats"]["membership"]
        seen && Enum.sort(seen["members"]) == wanted && seen
      end,
      10_000,
      "port #{port} listing #{inspect(wanted)}"
    )

    health!(port)["nats"]["membership"]
  end

  test "members show in each other's view" do
    {url, _port} = nats_server!([], jetstream: true)
    a = start_reactor!(reactor_name: "member-a")
    # Stopped by the test itself: started outside the test's supervisor,
    # which would start it again.
    {:ok, b} = Reactor.start_link(reactor_name: "member-b")
    {:ok, %{port: a_port}} = Reactor.listen(a, "127.0.0.1:0")
    {:ok, %{port: b_port}} = Reactor.listen(b, "127.0.0.1:0")
    ids = [health!(a_port)["node_id"], health!(b_port)["node_id"]]

    assert :ok =
             Reactor.connect(a, url,
               namespace: "ex.members",
               membership: true,
               membership_heartbeat_ms: 250
             )

    # `actor_store` implies membership.
    assert :ok = Reactor.connect(b, url, namespace: "ex.members", actor_store: true)
    seen = membership_showing!(a_port, ids)
    # `a` made the bucket with its heartbeat: a TTL of three.
    assert %{"bucket" => "ex_members_members", "heartbeat_ms" => 250, "ttl_ms" => 750} = seen
    # `b` found the bucket there and beats at a third of its TTL.
    assert %{"heartbeat_ms" => 250} = membership_showing!(b_port, ids)
    # stats/1 shows the members /health shows.
    for member <- [a, b], do: assert(Reactor.stats(member).nats.members == Enum.sort(ids))
    # A member that stops deletes its entry: it leaves the view.
    :ok = Reactor.stop(b)
    membership_showing!(a_port, Enum.take(ids, 1))
  end

  test "an unreachable server is PF503" do
    r = start_reactor!()
    port = free_port()

    assert {:error, %Error{code: "PF503", message: message}} =
             Reactor.connect(r, "nats://127.0.0.1:#{port}", connect_timeout_ms: 2_000)

    assert message =~ "127.0.0.1:#{port}"
    assert Reactor.stats(r).nats == nil
  end

  test "a server refusing the credentials is PF401; the right ones join" do
    {url, _port} = nats_server!(["--user", "pf", "--pass", "right-password"])
    r = start_reactor!()

    assert {:error, %Error{code: "PF401", message: message}} =
             Reactor.connect(r, url, user: "pf", password: "wrong-password")

    refute message =~ "wrong-password"
    assert :ok = Reactor.connect(r, url, user: "pf", password: "right-password")
    assert %{state: "connected"} = Reactor.stats(r).nats
  end
end
