defmodule PacketFlow.NetworkTest do
  @moduledoc "Reactors over loopback WebSocket: listen, connect, hubs, MessagePack."
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Error, Reactor, Result}

  defp serving_reactor!(opts \\ []) do
    r = start_reactor!(opts)
    :ok = Reactor.register(r, "df", "upper", fn data, _ -> String.upcase(data) end)
    :ok = Reactor.register(r, "df", "echo", fn data -> data end)
    :ok = Reactor.register(r, "df", "crash", fn _ -> raise "remote boom" end)
    {:ok, listening} = Reactor.listen(r, "127.0.0.1:0")
    {r, listening}
  end

  test "listen answers the address bound and the URL to dial" do
    {_r, listening} = serving_reactor!()
    assert %{host: "127.0.0.1", port: port, url: url} = listening
    assert port > 0
    assert url == "ws://127.0.0.1:#{port}/packetflow/v1"
  end

  test "two reactors over loopback: a handler in one serves a submit from the other" do
    {_server, %{url: url}} = serving_reactor!()
    client = start_reactor!()
    assert :ok = Reactor.connect(client, url)

    assert {:ok, "OVER THE WIRE"} = Reactor.call(client, "df", "upper", "over the wire")

    value = %{
      "list" => [1, -2, 3.5, nil, true],
      "nested" => %{"é" => "𝄞"},
      "big" => 9_223_372_036_854_775_807
    }

    assert {:ok, ^value} = Reactor.call(client, "df", "echo", value)

    assert {:ok, %Result{status: :success, data: "X", packet_id: id}} =
             Reactor.submit(client, %{group: "df", element: "upper", data: "x", priority: 9})

    assert is_binary(id)
  end

  test "a remote handler's failure arrives with its code and message" do
    {_server, %{url: url}} = serving_reactor!()
    client = start_reactor!()
    :ok = Reactor.connect(client, url)

    assert {:error, %Error{code: "PF500", message: message}} =
             Reactor.call(client, "df", "crash", 1)

    assert message =~ "remote boom"
  end

  test "a key no peer serves is PF001" do
    {_server, %{url: url}} = serving_reactor!()
    client = start_reactor!()
    :ok = Reactor.connect(client, url)
    assert {:error, %Error{code: "PF001"}} = Reactor.call(client, "df", "nobody", 1)
  end

  test "MessagePack on the connection" do
    {_server, %{url: url}} = serving_reactor!()
    client = start_reactor!()
    assert :ok = Reactor.connect(client, url, msgpack: true)
    value = %{"bytes" => String.duplicate("ab", 5_000), "n" => [0, -1, 1.25]}
    assert {:ok, ^value} = Reactor.call(client, "df", "echo", value)
  end

  test "the listen: and connect: options join the network before start_link returns" do
    {_server, %{url: url}} = serving_reactor!()
    client = start_reactor!(listen: "127.0.0.1:0", connect: [{url, msgpack: true}])
    assert {:ok, "AT START"} = Reactor.call(client, "df", "upper", "at start")
  end

  test "through a hub: a spoke's handler serves a submit from another spoke" do
    hub = start_reactor!(reactor_name: "hub", listen: "127.0.0.1:0")
    {:ok, %{url: hub_url}} = Reactor.listen(hub, "127.0.0.1:0")

    worker = start_reactor!(reactor_name: "worker")
    :ok = Reactor.register(worker, "df", "double", fn n -> n * 2 end)
    :ok = Reactor.connect(worker, hub_url)

    submitter = start_reactor!(reactor_name: "submitter", connect: hub_url)
    assert {:ok, 42} = Reactor.call(submitter, "df", "double", 21)
  end

  test "a peer's handler failing to be reached ends the call: stopping the server answers PF503" do
    {server, %{url: url}} = serving_reactor!()
    :ok = Reactor.register(server, "df", "hold", blocking_handler(self()))
    client = start_reactor!()
    :ok = Reactor.connect(client, url)

    caller = Task.async(fn -> Reactor.call(client, "df", "hold", 1, timeout_ms: 10_000) end)
    {_pid, 1} = receive_started!()
    :ok = Reactor.stop(server)
    assert {:error, %Error{code: "PF503"}} = Task.await(caller, 10_000)
  end

  test "a port that cannot be bound is an error, not a crash" do
    {_r, %{port: port}} = serving_reactor!()
    other = start_reactor!()
    assert {:error, %Error{message: message}} = Reactor.listen(other, "127.0.0.1:#{port}")
    assert message =~ "127.0.0.1:#{port}"
    assert Process.alive?(other)
  end

  test "a dial that fails is an error; as a start option it stops the start" do
    # A port that was just bound and released: nothing listens there.
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)
    url = "ws://127.0.0.1:#{port}/packetflow/v1"

    r = start_reactor!()
    assert {:error, %Error{}} = Reactor.connect(r, url)
    assert Process.alive?(r)

    Process.flag(:trap_exit, true)
    assert {:error, %Error{}} = Reactor.start_link(connect: url)
  end

  test "bad network options raise ArgumentError" do
    assert_raise ArgumentError, ~r/listen must be an address/, fn ->
      Reactor.start_link(listen: 8443)
    end

    assert_raise ArgumentError, ~r/connect entries/, fn ->
      Reactor.start_link(connect: [:nope])
    end

    r = start_reactor!()

    assert_raise ArgumentError, ~r/unknown connect options/, fn ->
      Reactor.connect(r, "ws://x", tls: 1)
    end
  end
end
