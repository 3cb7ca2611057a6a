defmodule PacketFlow.ReactorTest do
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Context, Error, Reactor, Result}

  setup do
    %{r: start_reactor!()}
  end

  test "call runs a two-argument handler and returns its data", %{r: r} do
    :ok = Reactor.register(r, "df", "upper", fn data, %Context{} -> String.upcase(data) end)
    assert {:ok, "HELLO WORLD"} = Reactor.call(r, "df", "upper", "hello world")
  end

  test "one-argument handlers and atom names work", %{r: r} do
    :ok = Reactor.register(r, :cf, :double, fn n -> n * 2 end)
    assert {:ok, 42} = Reactor.call(r, "cf", "double", 21)
    assert {:ok, 8} = Reactor.call(r, :cf, :double, 4)
  end

  test "submit returns a full result and honours a given id", %{r: r} do
    :ok = Reactor.register(r, "df", "echo", fn data, _ -> data end)

    assert {:ok,
            %Result{status: :success, data: %{"a" => 1}, error: nil, packet_id: "my-id-1"} = res} =
             Reactor.submit(r, %{
               group: "df",
               element: "echo",
               data: %{a: 1},
               id: "my-id-1",
               priority: 9
             })

    assert is_integer(res.duration_ms) and res.duration_ms >= 0
    assert Result.success?(res)
    assert {:ok, %Result{data: nil}} = Reactor.submit(r, group: "df", element: "echo")
  end

  test "handler results may be tagged tuples", %{r: r} do
    :ok = Reactor.register(r, "df", "ok", fn d, _ -> {:ok, d} end)
    :ok = Reactor.register(r, "df", "err", fn _, _ -> {:error, "went wrong"} end)

    :ok =
      Reactor.register(r, "df", "coded", fn _, _ ->
        {:error, %Error{code: "PF429", message: "busy"}}
      end)

    assert {:ok, [1]} = Reactor.call(r, "df", "ok", [1])

    assert {:error, %Error{code: "PF500", message: "handler returned an error: went wrong"}} =
             Reactor.call(r, "df", "err")

    assert {:error, %Error{code: "PF429", message: "busy"}} = Reactor.call(r, "df", "coded")
  end

  test "the context carries the packet id, metadata, deadline and trace id", %{r: r} do
    test = self()

    :ok =
      Reactor.register(r, "ed", "inspect", fn _data, ctx ->
        send(test, {:ctx, ctx, Context.remaining_ms(ctx), Context.trace_id(ctx)})
        :ok
      end)

    {:ok, res} =
      Reactor.submit(r, %{
        group: "ed",
        element: "inspect",
        timeout_ms: 5_000,
        metadata: %{"user" => "ann", tags: [1]}
      })

    assert_receive {:ctx, ctx, remaining, trace}
    assert ctx.packet_id == res.packet_id
    assert ctx.metadata == %{"user" => "ann", "tags" => [1]}
    assert remaining > 0 and remaining <= 5_000
    assert trace == res.packet_id
    assert {:ok, "ok"} = {:ok, res.data}
  end

  test "a handler calls another through its context, sharing the trace", %{r: r} do
    :ok =
      Reactor.register(r, "df", "inner", fn data, ctx ->
        %{"got" => data, "trace" => Context.trace_id(ctx)}
      end)

    :ok =
      Reactor.register(r, "df", "outer", fn data, ctx ->
        {:ok, inner} = Context.call(ctx, "df", "inner", data + 1)
        {:error, missing} = Context.call(ctx, :df, :missing)
        %{"inner" => inner, "missing" => missing.code, "me" => ctx.packet_id}
      end)

    assert {:ok, %{"inner" => %{"got" => 2, "trace" => trace}, "missing" => "PF001", "me" => me}} =
             Reactor.call(r, "df", "outer", 1)

    assert trace == me
  end

  test "a handler can submit through the reactor itself", %{r: r} do
    :ok = Reactor.register(r, "df", "leaf", fn d -> d <> "!" end)
    :ok = Reactor.register(r, "df", "branch", fn d -> Reactor.call(r, "df", "leaf", d) end)
    assert {:ok, "x!"} = Reactor.call(r, "df", "branch", "x")
  end

  test "registering again replaces the handler; unregister removes it", %{r: r} do
    :ok = Reactor.register(r, "rm", "v", fn _ -> 1 end)
    assert {:ok, 1} = Reactor.call(r, "rm", "v")
    :ok = Reactor.register(r, "rm", "v", fn _ -> 2 end)
    assert {:ok, 2} = Reactor.call(r, "rm", "v")
    assert Reactor.unregister(r, "rm", "v")
    refute Reactor.unregister(r, "rm", "v")
    assert {:error, %Error{code: "PF001"}} = Reactor.call(r, "rm", "v")
  end

  test "bad handler names are PF400 errors; bad handlers raise", %{r: r} do
    assert {:error, %Error{code: "PF400", message: msg}} =
             Reactor.register(r, "zz", "x", fn d -> d end)

    assert msg =~ "group must be one of"

    assert {:error, %Error{code: "PF400", message: msg}} =
             Reactor.register(r, "df", "has space", fn d -> d end)

    assert msg =~ "element must be"

    assert_raise ArgumentError, ~r/arity 1 or 2/, fn ->
      Reactor.register(r, "df", "x", fn -> 1 end)
    end

    assert_raise ArgumentError, ~r/group must be a string or an atom/, fn ->
      Reactor.register(r, 1, "x", fn d -> d end)
    end
  end

  test "stats count answers per handler", %{r: r} do
    :ok = Reactor.register(r, "co", "count", fn d -> d end)
    :ok = Reactor.register(r, "co", "fail", fn _ -> raise "no" end)
    for i <- 1..5, do: {:ok, ^i} = Reactor.call(r, "co", "count", i)
    {:error, _} = Reactor.call(r, "co", "fail")
    {:error, _} = Reactor.call(r, "co", "nothing")

    stats = Reactor.stats(r)
    assert %{in_flight: 0, queued: 0, unrouted: 1, handlers: handlers} = stats
    assert %{count: 5, errors: 0} = Enum.find(handlers, &(&1.element == "count"))
    assert %{count: 1, errors: 1, group: "co"} = Enum.find(handlers, &(&1.element == "fail"))
  end

  test "higher priority runs first when packets wait" do
    r = start_reactor!(max_inflight: 1)
    test = self()
    :ok = Reactor.register(r, "cf", "gate", blocking_handler(test))
    :ok = Reactor.register(r, "cf", "order", fn d -> send(test, {:ran, d}) end)

    gate = Task.async(fn -> Reactor.call(r, "cf", "gate", "g") end)
    {gate_pid, "g"} = receive_started!()

    waiting =
      for p <- [1, 5, 10, 5] do
        t =
          Task.async(fn ->
            Reactor.submit(r, %{group: "cf", element: "order", data: p, priority: p})
          end)

        t
      end

    wait_until(fn -> Reactor.stats(r).queued == 4 end, 2_000, "4 queued packets")
    send(gate_pid, :release)
    assert {:ok, "g"} = Task.await(gate)
    Enum.each(waiting, &Task.await/1)

    order =
      for _ <- 1..4,
          do:
            (receive do
               {:ran, p} -> p
             end)

    assert order == [10, 5, 5, 1]
  end

  test "child_spec uses the name as id and starts under a supervisor" do
    name = :"reactor_#{System.unique_integer([:positive])}"

    assert %{id: ^name, start: {Reactor, :start_link, [[name: ^name]]}} =
             Reactor.child_spec(name: name)

    {:ok, sup} = Supervisor.start_link([{Reactor, name: name}], strategy: :one_for_one)
    :ok = Reactor.register(name, "df", "x", fn d -> d end)
    assert {:ok, 3} = Reactor.call(name, "df", "x", 3)
    assert Reactor.stats(name).name == Atom.to_string(name)
    Supervisor.stop(sup)
  end

  test "start_link rejects bad options: types here, values by the core" do
    assert_raise ArgumentError, fn -> Reactor.start_link(bogus: 1) end

    assert_raise ArgumentError, ~r/max_inflight must be a non-negative integer, got: -1/, fn ->
      Reactor.start_link(max_inflight: -1)
    end

    assert_raise ArgumentError, ~r/max_queue must be a non-negative integer, got: "10"/, fn ->
      Reactor.start_link(max_queue: "10")
    end

    error = assert_raise Error, fn -> Reactor.start_link(max_inflight: 0) end
    assert %Error{code: "PF400", message: "max_inflight must be at least 1, got 0"} = error
  end

  test "options not given take the core's defaults" do
    r = start_reactor!()
    assert Reactor.stats(r).name == "packetflow"
  end
end
