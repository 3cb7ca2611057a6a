defmodule PacketFlow.ErrorsTest do
  @moduledoc "Every error code a user of an in-process reactor can meet."
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Error, Native, Reactor, Result}

  setup do
    %{r: start_reactor!()}
  end

  test "PF001: no handler", %{r: r} do
    assert {:error, %Error{code: "PF001", message: "no handler for df:missing"}} =
             Reactor.call(r, "df", "missing", 1)
  end

  test "PF400: fields that break protocol rules are answered, naming the field", %{r: r} do
    :ok = Reactor.register(r, "df", "x", fn d -> d end)

    for {packet, text} <- [
          {%{group: "zz", element: "x"}, "group must be one of cf, df, ed, co, mc, rm"},
          {%{group: "df", element: "bad element"}, "element must be"},
          {%{group: "df", element: "x", priority: 11},
           "priority must be an integer 1-10, got 11"},
          {%{group: "df", element: "x", timeout_ms: 0}, "timeout_ms must be a positive integer"},
          {%{group: "df", element: "x", id: ""}, "id must be a string of 1-128 bytes"},
          {%{group: "df", element: "x", metadata: %{"pf.hops" => "three"}},
           ~s(metadata["pf.hops"] must be)}
        ] do
      assert {:ok, %Result{status: :error, error: %Error{code: "PF400", message: message}}} =
               Reactor.submit(r, packet)

      assert message =~ text
    end

    assert {:error, %Error{code: "PF400"}} = Reactor.call(r, "df", "x", 1, priority: 0)
  end

  test "PF408: the handler does not answer before timeout_ms", %{r: r} do
    :ok = Reactor.register(r, "df", "slow", blocking_handler(self()))
    started = System.monotonic_time(:millisecond)

    assert {:error, %Error{code: "PF408", message: message}} =
             Reactor.call(r, "df", "slow", 1, timeout_ms: 50)

    assert System.monotonic_time(:millisecond) - started >= 50
    assert message =~ "df:slow"
    {pid, 1} = receive_started!()
    send(pid, :release)
  end

  test "PF409: a packet with the same id is already in flight", %{r: r} do
    :ok = Reactor.register(r, "df", "hold", blocking_handler(self()))

    first =
      Task.async(fn -> Reactor.submit(r, %{group: "df", element: "hold", data: 1, id: "dup"}) end)

    {pid, 1} = receive_started!()

    assert {:ok, %Result{status: :error, packet_id: "dup", error: %Error{code: "PF409"}}} =
             Reactor.submit(r, %{group: "df", element: "hold", data: 2, id: "dup"})

    send(pid, :release)
    assert {:ok, %Result{status: :success, data: 1}} = Task.await(first)
  end

  test "PF424: a dependency failed", %{r: r} do
    :ok = Reactor.register(r, "cf", "fail", fn _ -> raise "dependency broke" end)
    :ok = Reactor.register(r, "cf", "next", fn d -> d end)
    :ok = Reactor.register(r, "cf", "ok", fn d -> d end)

    {:ok, %Result{status: :error}} =
      Reactor.submit(r, %{group: "cf", element: "fail", id: "dep-a"})

    {:ok, %Result{status: :success}} =
      Reactor.submit(r, %{group: "cf", element: "ok", id: "dep-b"})

    assert {:error, %Error{code: "PF424", message: message}} =
             Reactor.call(r, "cf", "next", 1, dependencies: ["dep-b", "dep-a"])

    assert message =~ "dep-a"
    assert {:ok, 1} = Reactor.call(r, "cf", "next", 1, dependencies: ["dep-b"])
  end

  test "PF429: the queue is full" do
    r = start_reactor!(max_inflight: 1, max_queue: 0)
    :ok = Reactor.register(r, "rm", "hold", blocking_handler(self()))
    first = Task.async(fn -> Reactor.call(r, "rm", "hold", 1) end)
    {pid, 1} = receive_started!()
    assert {:error, %Error{code: "PF429", message: message}} = Reactor.call(r, "rm", "hold", 2)
    assert message =~ "queue is full"
    send(pid, :release)
    assert {:ok, 1} = Task.await(first)
  end

  test "PF500: a handler that raises, throws, exits or returns garbage", %{r: r} do
    :ok = Reactor.register(r, "df", "raise", fn _ -> raise ArgumentError, "bad thing" end)
    :ok = Reactor.register(r, "df", "throw", fn _ -> throw(:ball) end)
    :ok = Reactor.register(r, "df", "exit", fn _ -> exit(:gone) end)
    :ok = Reactor.register(r, "df", "tuple", fn _ -> {:a, :b, :c} end)
    :ok = Reactor.register(r, "df", "badmatch", fn d -> {:ok, _} = d end)

    assert {:error, %Error{code: "PF500", message: "ArgumentError: bad thing"}} =
             Reactor.call(r, "df", "raise")

    assert {:error, %Error{code: "PF500", message: "handler threw :ball"}} =
             Reactor.call(r, "df", "throw")

    assert {:error, %Error{code: "PF500", message: "handler exited: " <> _}} =
             Reactor.call(r, "df", "exit")

    assert {:error, %Error{code: "PF500", message: m}} = Reactor.call(r, "df", "tuple")

    assert m ==
             "the handler's result is a tuple, which cannot cross as a JSON value (use maps, lists, strings, numbers, booleans or nil)"

    assert {:error, %Error{code: "PF500", message: "MatchError: " <> _}} =
             Reactor.call(r, "df", "badmatch", 1)
  end

  test "PF500: a handler process killed before answering", %{r: r} do
    :ok = Reactor.register(r, "df", "killed", fn _ -> Process.exit(self(), :kill) end)

    assert {:error, %Error{code: "PF500", message: message}} =
             Reactor.call(r, "df", "killed", nil, timeout_ms: 5_000)

    assert message =~ "ended without answering"
  end

  test "crashing handlers never take the reactor down", %{r: r} do
    :ok = Reactor.register(r, "df", "boom", fn _ -> raise "boom" end)
    :ok = Reactor.register(r, "df", "kill", fn _ -> Process.exit(self(), :kill) end)

    :ok =
      Reactor.register(r, "df", "link", fn _ ->
        spawn_link(fn -> exit(:linked_crash) end)
        Process.sleep(:infinity)
      end)

    :ok = Reactor.register(r, "df", "fine", fn d -> d end)
    pid = GenServer.whereis(r)

    for _ <- 1..20 do
      assert {:error, %Error{code: "PF500"}} = Reactor.call(r, "df", "boom")
      assert {:error, %Error{code: "PF500"}} = Reactor.call(r, "df", "kill")

      assert {:error, %Error{code: "PF500"}} =
               Reactor.call(r, "df", "link", nil, timeout_ms: 5_000)
    end

    assert {:ok, "still here"} = Reactor.call(r, "df", "fine", "still here")
    assert GenServer.whereis(r) == pid and Process.alive?(pid)
  end

  test "PF503: packets in flight when the reactor stops" do
    {:ok, r} = Reactor.start_link()
    Process.unlink(r)
    :ok = Reactor.register(r, "df", "hold", blocking_handler(self()))
    waiting = Task.async(fn -> Reactor.submit(r, %{group: "df", element: "hold", data: 1}) end)
    {_pid, 1} = receive_started!()
    :ok = Reactor.stop(r)
    assert {:ok, %Result{status: :error, error: %Error{code: "PF503"}}} = Task.await(waiting)
  end

  test "errors are exceptions with the code in their message" do
    e = %Error{code: "PF408", message: "too slow"}
    assert Exception.message(e) == "PF408: too slow"
    assert_raise Error, "PF408: too slow", fn -> raise e end
    assert Native.live_reactors() >= 1
  end

  test "the table of codes is the core's, in the docs too" do
    codes = Error.codes()
    names = Enum.map(codes, &elem(&1, 0))
    assert "PF413" in names and "PF508" in names
    assert Enum.all?(codes, fn {code, meaning} -> code =~ ~r/^PF\d{3}$/ and meaning != "" end)

    # The module's documentation was made from the same list (it is
    # compiled again whenever the native library changes).
    {:docs_v1, _, _, _, %{"en" => doc}, _, _} = Code.fetch_docs(Error)

    for {code, meaning} <- codes do
      assert doc =~ "| `\"#{code}\"` | #{meaning} |"
    end
  end
end
