defmodule PacketFlow.RulesTest do
  # The rules every binding follows (docs/protocol.md), decided by the core
  # and only carried out here.
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Context, Error, Reactor}

  # Registers `df:which`, answering `answer`, reporting its worker to the
  # test.
  defp register_which(r, answer) do
    test = self()

    :ok =
      Reactor.register(r, "df", "which", fn _ ->
        send(test, {:ran, answer, self()})
        answer
      end)
  end

  # A call to `df:which` that is on its way: handed to the reactor's one
  # idle worker, which is suspended, so the call waits in its mailbox.
  defp call_on_its_way(r) do
    register_which(r, "first")
    assert {:ok, "first"} = Reactor.call(r, "df", "which")
    assert_receive {:ran, "first", worker}
    true = :erlang.suspend_process(worker)
    call = Task.async(fn -> Reactor.call(r, "df", "which", nil, timeout_ms: 5_000) end)

    wait_until(
      fn -> Process.info(worker, :message_queue_len) == {:message_queue_len, 1} end,
      2_000,
      "the call to reach the worker's mailbox"
    )

    {call, worker}
  end

  defp handler_functions(r), do: map_size(:sys.get_state(dispatcher_of(r)).handlers)

  describe "a packet runs the registration it was routed to" do
    test "replacing the handler does not change what a packet on its way runs" do
      r = start_reactor!()
      {call, worker} = call_on_its_way(r)
      register_which(r, "second")
      true = :erlang.resume_process(worker)

      assert {:ok, "first"} = Task.await(call)
      assert {:ok, "second"} = Reactor.call(r, "df", "which")
    end

    test "unregistering does not change what a packet on its way runs" do
      r = start_reactor!()
      {call, worker} = call_on_its_way(r)
      assert Reactor.unregister(r, "df", "which")
      true = :erlang.resume_process(worker)

      assert {:ok, "first"} = Task.await(call)
      assert {:error, %Error{code: "PF001"}} = Reactor.call(r, "df", "which")
    end

    test "a packet waiting for a busy handler runs the registration it was routed to" do
      r = start_reactor!(max_inflight: 1)
      :ok = Reactor.register(r, "df", "hold", blocking_handler(self()))
      holder = Task.async(fn -> Reactor.call(r, "df", "hold", "held") end)
      {held_by, "held"} = receive_started!()

      # Routed now, run once the slot frees.
      register_which(r, "first")
      queued = Task.async(fn -> Reactor.call(r, "df", "which") end)
      wait_until(fn -> Reactor.stats(r).queued == 1 end, 2_000, "the packet to wait")
      assert Reactor.unregister(r, "df", "which")

      send(held_by, :release)
      assert {:ok, "held"} = Task.await(holder)
      assert {:ok, "first"} = Task.await(queued)
    end

    test "the functions of old registrations are let go once their packets are answered" do
      r = start_reactor!()

      for round <- 1..20 do
        register_which(r, "round #{round}")
        assert {:ok, "round " <> _} = Reactor.call(r, "df", "which")
      end

      {call, worker} = call_on_its_way(r)
      register_which(r, "last")
      # The registration of the call on its way is still needed.
      wait_until(fn -> handler_functions(r) == 2 end, 2_000, "old registrations to be let go")
      true = :erlang.resume_process(worker)
      assert {:ok, "first"} = Task.await(call)
      wait_until(fn -> handler_functions(r) == 1 end, 2_000, "the last old registration to go")

      assert Reactor.unregister(r, "df", "which")
      wait_until(fn -> handler_functions(r) == 0 end, 2_000, "the removed registration to go")
    end

    test "a refused registration is let go" do
      r = start_reactor!()
      assert {:error, %Error{code: "PF400"}} = Reactor.register(r, "zz", "x", fn d -> d end)
      wait_until(fn -> handler_functions(r) == 0 end, 2_000, "the refused registration to go")
    end
  end

  describe "listen and connect wait for the core's answer" do
    test "a node that never finishes the handshake: the core's PF503 after its handshake timeout" do
      # Accepts TCP connections and never answers the WebSocket upgrade.
      {:ok, silent} = :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}])
      {:ok, port} = :inet.port(silent)
      test = self()

      acceptor =
        spawn_link(fn ->
          {:ok, socket} = :gen_tcp.accept(silent)
          send(test, :accepted)

          receive do
            :done -> :gen_tcp.close(socket)
          after
            30_000 -> :ok
          end
        end)

      r = start_reactor!()
      started = System.monotonic_time(:millisecond)
      url = "ws://127.0.0.1:#{port}/packetflow/v1"
      assert {:error, %Error{code: "PF503", message: message}} = Reactor.connect(r, url)
      waited = System.monotonic_time(:millisecond) - started
      assert_received :accepted
      assert message =~ "timed out"
      # The core's handshake timeout (10 s), not a timer of the binding's.
      assert waited >= 9_000 and waited < 30_000
      send(acceptor, :done)
    end
  end

  describe "ctx.call after the handler answered" do
    test "fails with the core's PF503, and calls before the answer work" do
      r = start_reactor!()
      test = self()
      :ok = Reactor.register(r, "df", "echo", fn d -> d end)

      :ok =
        Reactor.register(r, "df", "leaky", fn _data, ctx ->
          {:ok, "before"} = Context.call(ctx, "df", "echo", "before")
          # The context outlives the handler in another process.
          spawn(fn ->
            receive do
              :call -> send(test, {:late, Context.call(ctx, "df", "echo", "after")})
            end
          end)
          |> then(&send(test, {:keeper, &1}))

          "answered"
        end)

      assert {:ok, "answered"} = Reactor.call(r, "df", "leaky")
      assert_receive {:keeper, keeper}
      send(keeper, :call)
      assert_receive {:late, {:error, %Error{code: "PF503", message: message}}}, 2_000
      assert message == "ctx.call to df:echo after the handler answered; call before returning"
    end

    test "is PF503 too when the packet came over the network" do
      server = start_reactor!()
      test = self()
      :ok = Reactor.register(server, "df", "echo", fn d -> d end)

      :ok =
        Reactor.register(server, "df", "leaky", fn _data, ctx ->
          send(test, {:ctx, ctx})
          "answered"
        end)

      {:ok, %{url: url}} = Reactor.listen(server, "127.0.0.1:0")
      client = start_reactor!(connect: url)
      assert {:ok, "answered"} = Reactor.call(client, "df", "leaky")
      assert_receive {:ctx, ctx}

      assert {:error, %Error{code: "PF503", message: "ctx.call to df:echo after" <> _}} =
               Context.call(ctx, "df", "echo", 1)
    end
  end

  describe "the binding adds no codes of its own" do
    test "lib/ holds no error code outside its docs" do
      sources = Path.wildcard(Path.join([__DIR__, "..", "lib", "**", "*.ex"]))
      assert sources != []

      found =
        for file <- sources,
            code <- codes_in(Code.string_to_quoted!(File.read!(file))),
            do: {Path.relative_to(file, Path.join(__DIR__, "..")), code}

      assert found == []
    end
  end

  # Every "PFnnn" string literal of `ast`, module attributes (docs) left out.
  defp codes_in(ast) do
    {_, codes} =
      Macro.prewalk(ast, [], fn
        {:@, _, _}, acc ->
          {nil, acc}

        literal, acc when is_binary(literal) ->
          if literal =~ ~r/^PF\d{3}$/, do: {literal, [literal | acc]}, else: {literal, acc}

        node, acc ->
          {node, acc}
      end)

    Enum.reverse(codes)
  end
end
