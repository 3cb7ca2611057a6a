defmodule PacketFlow.ActorsTest.Counter do
  @moduledoc false
  # The issue's counter, plus messages that fail in every way a turn can.
  use PacketFlow.Actor

  @impl true
  def handle_message("increment", message, %{"value" => value} = state) do
    value = value + Map.get(message, "by", 1)
    {:reply, %{value: value}, %{state | "value" => value}}
  end

  def handle_message("get_value", _message, state), do: {:reply, %{value: state["value"]}, state}

  def handle_message("set", %{"value" => value}, state),
    do: {:noreply, %{state | "value" => value}}

  def handle_message("append", %{"item" => item}, state),
    do: {:noreply, Map.update(state, "items", [item], &(&1 ++ [item]))}

  def handle_message("items", _message, state), do: {:reply, state["items"], state}
  def handle_message("done", _message, state), do: {:stop, %{bye: state["value"]}, state}

  def handle_message("raise", _message, state) do
    _ = %{state | "value" => -1}
    raise "refused"
  end

  def handle_message("throw", _message, _state), do: throw(:nope)
  def handle_message("exit", _message, _state), do: exit(:gone)
  def handle_message("bad_return", _message, state), do: {:ok, state}

  def handle_message("bad_state", _message, state),
    do: {:reply, :ok, %{state | "value" => {:a, :tuple}}}

  def handle_message("kill", _message, _state), do: Process.exit(self(), :kill)

  # Reports {:turn, pid, message} to the test process named in the message
  # and waits for :release before answering.
  def handle_message("hold", %{"test" => test} = message, %{"value" => value} = state) do
    test = test |> Base.decode64!() |> :erlang.binary_to_term()
    send(test, {:turn, self(), message})

    receive do
      :release -> {:reply, %{value: value + 1}, %{state | "value" => value + 1}}
    after
      10_000 -> {:reply, "never released", state}
    end
  end
end

defmodule PacketFlow.ActorsTest.Virtual do
  @moduledoc false
  # A virtual actor type: any id names an actor that starts at 0; only the
  # declared message types reach it.
  use PacketFlow.Actor

  @impl true
  def initial_state, do: %{"value" => 0}

  @impl true
  def message_types, do: ["increment", :get_value]

  @impl true
  def handle_message("increment", _message, %{"value" => value}),
    do: {:reply, %{value: value + 1}, %{"value" => value + 1}}

  def handle_message("get_value", _message, state), do: {:reply, state, state}
end

defmodule PacketFlow.ActorsTest.Relay do
  @moduledoc false
  # handle_message/4: the turn's context, for calls and messages made on
  # behalf of the message (virtual, so any id works).
  use PacketFlow.Actor
  alias PacketFlow.{ActorRef, Context}

  @impl true
  def initial_state, do: %{"seen" => 0}

  @impl true
  def handle_message("whoami", _message, ctx, state),
    do: {:reply, %{actor: Map.from_struct(ctx.actor), packet_id: ctx.packet_id}, state}

  def handle_message("double", %{"n" => n}, ctx, state) do
    {:ok, doubled} = Context.call(ctx, "df", "double", n)
    {:reply, doubled, state}
  end

  # Asks `via` to read this actor back: a chain that comes back here while
  # this turn waits (reentrant), then counts the turn.
  def handle_message("round_trip", %{"via" => via, "op" => op}, ctx, state) do
    answer =
      Context.send(ctx, %ActorRef{type: "relay", id: via}, %{
        type: "call_back",
        to: ctx.actor.id,
        op: op
      })

    {:reply, answer_of(answer), %{state | "seen" => state["seen"] + 1}}
  end

  def handle_message("call_back", %{"to" => to, "op" => op}, ctx, state) do
    {:reply, answer_of(Context.send(ctx, %ActorRef{type: "relay", id: to}, %{type: op})), state}
  end

  def handle_message("read", _message, _ctx, state), do: {:reply, state, state}

  def handle_message("write", _message, _ctx, state),
    do: {:reply, "wrote", %{state | "seen" => -1}}

  def handle_message("tell", %{"to" => to}, ctx, state) do
    :ok = Context.tell(ctx, %ActorRef{type: "relay", id: to}, %{type: "bump"})
    {:reply, "told", state}
  end

  def handle_message("bump", _message, _ctx, state),
    do: {:noreply, %{state | "seen" => state["seen"] + 1}}

  # A tell and two sends to `to`, with options and without, and two of
  # bad options.
  def handle_message("with_options", %{"to" => to}, ctx, state) do
    to = %ActorRef{type: "relay", id: to}
    :ok = Context.tell(ctx, to, %{type: "note"}, priority: 2, timeout_ms: 2_000)
    sent = Context.send(ctx, to, %{type: "look"}, priority: 9, timeout_ms: 2_000)
    inherited = Context.send(ctx, to, %{type: "look"})

    refused =
      for {:error, %PacketFlow.Error{code: code, message: message}} <- [
            Context.send(ctx, to, %{type: "look"}, priority: 11),
            Context.tell(ctx, to, %{type: "note"}, timeout_ms: 0)
          ],
          do: "#{code}: #{message}"

    {:reply, %{sent: answer_of(sent), inherited: answer_of(inherited), refused: refused}, state}
  end

  def handle_message("look", _message, ctx, state),
    do:
      {:reply, %{priority: Context.priority(ctx), short: Context.remaining_ms(ctx) <= 2_000},
       state}

  def handle_message("note", _message, ctx, state),
    do: {:noreply, Map.put(state, "noted", Context.priority(ctx))}

  defp answer_of({:ok, value}), do: %{"ok" => value}
  defp answer_of({:error, %PacketFlow.Error{code: code}}), do: %{"error" => code}
end

defmodule PacketFlow.ActorsTest do
  @moduledoc "Actors: the behaviour, the API, and their promises against real processes and files."
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{ActorRef, Actors, Error, Reactor}
  alias PacketFlow.ActorsTest.{Counter, Relay, Virtual}

  defp counter_reactor!(opts \\ []) do
    r = start_reactor!(opts)
    :ok = Actors.register(r, "counter", Counter)
    r
  end

  defp value(r, actor) do
    {:ok, %{"value" => value}} = Actors.send(r, actor, %{type: "get_value"})
    value
  end

  defp me, do: self() |> :erlang.term_to_binary() |> Base.encode64()

  describe "the counter" do
    test "the issue's counter: create, increment, get_value" do
      r = counter_reactor!()

      assert {:ok, %ActorRef{type: "counter", id: id} = counter} =
               Actors.create(r, "counter", %{value: 0})

      assert byte_size(id) == 36
      assert {:ok, %{"value" => 1}} = Actors.send(r, counter, %{type: "increment"})
      assert {:ok, %{"value" => 5}} = Actors.send(r, counter, %{type: :increment, by: 4})
      assert {:ok, %{"value" => 5}} = Actors.send(r, counter, %{"type" => "get_value"})
    end

    test "{:noreply, state} answers nil; {:stop, reply, state} answers, then deletes the actor" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 0}, id: "c1")
      assert {:ok, nil} = Actors.send(r, counter, %{type: "set", value: 7})
      assert {:ok, ["c1"]} = Actors.list(r, "counter")
      assert {:ok, %{"bye" => 7}} = Actors.send(r, counter, %{type: "done"})

      assert {:error, %Error{code: "PF404", message: "no actor counter/c1: create it first"}} =
               Actors.send(r, counter, %{type: "get_value"})

      assert {:ok, []} = Actors.list(r, "counter")
      assert {:ok, 0} = Actors.count(r, "counter")
    end

    test "create with an id, PF409 when it exists; stop; list and count" do
      r = counter_reactor!()
      assert {:ok, %ActorRef{id: "a"} = a} = Actors.create(r, "counter", %{value: 1}, id: "a")
      {:ok, _} = Actors.create(r, "counter", %{value: 2}, id: "b")

      assert {:error, %Error{code: "PF409", message: "actor counter/a already exists"}} =
               Actors.create(r, "counter", %{value: 9}, id: "a")

      assert value(r, a) == 1
      assert {:ok, ["a", "b"]} = Actors.list(r, "counter")
      assert {:ok, 2} = Actors.count(r, "counter")
      assert :ok = Actors.stop(r, a)
      assert {:error, %Error{code: "PF404"}} = Actors.stop(r, a)
      assert {:ok, ["b"]} = Actors.list(r, "counter")

      assert {:error, %Error{code: "PF404", message: message}} = Actors.list(r, "nobody")
      assert message =~ "nobody"
    end

    test "1,000 concurrent senders to one counter end exactly at 1,000" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 0})

      replies =
        1..1_000
        |> Enum.map(fn _ ->
          Task.async(fn -> Actors.send(r, counter, %{type: "increment"}) end)
        end)
        |> Task.await_many(60_000)

      assert value(r, counter) == 1_000
      # Each turn saw the one before it: every value from 1 to 1,000 once.
      assert replies |> Enum.map(fn {:ok, %{"value" => v}} -> v end) |> Enum.sort() ==
               Enum.to_list(1..1_000)
    end
  end

  describe "transactional turns" do
    test "a turn that raises, throws, exits, returns something else or a state that cannot cross changes nothing" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 3})

      failures = [
        {"raise", "RuntimeError: refused"},
        {"throw", "PacketFlow.ActorsTest.Counter.handle_message/3 threw :nope"},
        {"exit", "PacketFlow.ActorsTest.Counter.handle_message/3 exited: :gone"},
        {"bad_return",
         "PacketFlow.ActorsTest.Counter.handle_message/3 returned {:ok, %{\"value\" => 3}}"},
        {"bad_state", "the actor's new state.value is a tuple"},
        {"kill", "process ended without answering"}
      ]

      for {type, expected} <- failures do
        assert {:error, %Error{code: "PF500", message: message}} =
                 Actors.send(r, counter, %{type: type})

        assert message =~ expected
        assert value(r, counter) == 3, "#{type} left the state alone"
      end

      assert {:error, %Error{code: "PF500", message: message}} =
               Actors.send(r, counter, %{type: "no_such_message"})

      assert message =~ "FunctionClauseError"
      assert {:ok, %{"value" => 4}} = Actors.send(r, counter, %{type: "increment"})
    end

    test "a turn past its deadline answers PF408 and does not commit, even if it ends later" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 0})

      hold = %{type: "hold", test: me()}
      late = Task.async(fn -> Actors.send(r, counter, hold, timeout_ms: 500) end)

      assert_receive {:turn, turn, _}, 2_000
      assert {:error, %Error{code: "PF408"}} = Task.await(late)
      send(turn, :release)
      assert value(r, counter) == 0
    end
  end

  describe "effectively once" do
    test "a message repeated with the same id is applied once" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 0})
      assert {:ok, %{"value" => 1}} = Actors.send(r, counter, %{type: "increment"}, id: "m-1")
      assert {:ok, %{"value" => 1}} = Actors.send(r, counter, %{type: "increment"}, id: "m-1")
      assert {:ok, %{"value" => 2}} = Actors.send(r, counter, %{type: "increment"}, id: "m-2")
      assert value(r, counter) == 2
    end

    test "a repeat that arrives while the first runs gets the first one's answer" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 0})
      hold = %{type: "hold", test: me()}
      first = Task.async(fn -> Actors.send(r, counter, hold, id: "m-1") end)
      assert_receive {:turn, turn, _}, 2_000
      repeat = Task.async(fn -> Actors.send(r, counter, hold, id: "m-1") end)

      # Waiting for its result: the NIF that submitted it has joined it to
      # the first copy.
      wait_until(
        fn ->
          Process.info(repeat.pid, :current_function) ==
            {:current_function, {Reactor, :await_native, 3}}
        end,
        2_000,
        "the repeat to wait"
      )

      send(turn, :release)
      assert {:ok, %{"value" => 1}} = Task.await(first)
      assert {:ok, %{"value" => 1}} = Task.await(repeat)
      refute_received {:turn, _, _}
      assert value(r, counter) == 1
    end
  end

  describe "a durable store and kill -9" do
    # A node in an OS process of its own (test/support/actor_node.exs).
    defp start_node!(store) do
      elixir = System.find_executable("elixir") || flunk("elixir is not on the PATH")
      ebin = Path.join(:code.lib_dir(:packetflow), "ebin")
      script = Path.expand("support/actor_node.exs", __DIR__)

      port =
        Port.open({:spawn_executable, elixir}, [
          :binary,
          :exit_status,
          {:line, 65_536},
          args: ["-pa", ebin, script, store]
        ])

      receive do
        {^port, {:data, {:eol, "ready " <> os_pid}}} -> {port, os_pid}
        {^port, {:exit_status, status}} -> flunk("the node exited with #{status}")
      after
        30_000 -> flunk("the node did not start")
      end
    end

    defp ask!({port, _}, request) do
      Port.command(port, PacketFlow.JSON.encode!(request) <> "\n")

      receive do
        {^port, {:data, {:eol, line}}} -> PacketFlow.JSON.decode!(line)
      after
        10_000 -> flunk("the node did not answer #{inspect(request)}")
      end
    end

    defp kill_9!({port, os_pid}) do
      {_, 0} = System.cmd("kill", ["-9", os_pid])

      receive do
        {^port, {:exit_status, status}} -> assert status == 128 + 9
      after
        10_000 -> flunk("the node did not die")
      end
    end

    test "acknowledged state and remembered turns survive kill -9 and a restart on the same file" do
      store = Path.join(temp_dir!(), "actors.redb")
      node = start_node!(store)

      assert %{"ok" => %{"id" => "c1"}} =
               ask!(node, %{op: "create", id: "c1", state: %{value: 0}})

      increment = %{op: "send", id: "c1", message: %{type: "increment"}, packet_id: "m-1"}
      assert %{"ok" => %{"value" => 1}} = ask!(node, increment)

      assert %{"ok" => %{"value" => 3}} =
               ask!(node, %{op: "send", id: "c1", message: %{type: "increment", by: 2}})

      kill_9!(node)

      node = start_node!(store)
      # The repeat of an acknowledged message is answered from the store's
      # memory of it, not applied again.
      assert %{"ok" => %{"value" => 1}} = ask!(node, increment)

      assert %{"ok" => %{"value" => 3}} =
               ask!(node, %{op: "send", id: "c1", message: %{type: "get_value"}})

      assert %{"error" => "PF409"} = ask!(node, %{op: "create", id: "c1", state: %{value: 0}})
      kill_9!(node)
    end

    test "a reactor's store file is closed when it stops, so a restart may open it at once" do
      store = Path.join(temp_dir!(), "actors.redb")
      {:ok, r} = Reactor.start_link(actor_store: store)
      :ok = Actors.register(r, "counter", Counter)
      {:ok, counter} = Actors.create(r, "counter", %{value: 0}, id: "c1")
      {:ok, _} = Actors.send(r, counter, %{type: "increment"})

      Process.flag(:trap_exit, true)

      assert {:error, %Error{code: "PF400", message: message}} =
               Reactor.start_link(actor_store: store)

      assert message =~ "cannot open the actor store #{store}"

      # As a supervisor restarts it: the old reactor's native resources may
      # not be freed yet; its file is closed.
      :ok = Reactor.stop(r)
      {:ok, again} = Reactor.start_link(actor_store: store)
      :ok = Actors.register(again, "counter", Counter)
      assert {:ok, %{"value" => 2}} = Actors.send(again, counter, %{type: "increment"})
      :ok = Reactor.stop(again)
    end

    test "a store file that cannot be opened stops the reactor from starting, naming the path" do
      Process.flag(:trap_exit, true)
      path = Path.join([temp_dir!(), "missing-folder", "actors.redb"])

      assert {:error, %Error{code: "PF400", message: message}} =
               Reactor.start_link(actor_store: path)

      assert message =~ path
    end
  end

  describe "lifecycle" do
    test "an idle actor is passivated and comes back with its state on its next message" do
      r = counter_reactor!(actor_passivate_after_ms: 20)
      {:ok, counter} = Actors.create(r, "counter", %{value: 0})
      {:ok, _} = Actors.send(r, counter, %{type: "increment", by: 41})

      wait_until(
        fn -> match?([%{active: 0, passivated: 1}], Reactor.stats(r).actors) end,
        5_000,
        "the actor to be passivated"
      )

      assert [%{passivations: 1, activations: 1}] = Reactor.stats(r).actors
      assert {:ok, %{"value" => 42}} = Actors.send(r, counter, %{type: "increment"})
      assert [%{actor_type: "counter", activations: 2}] = Reactor.stats(r).actors
      assert {:ok, 1} = Actors.count(r, "counter")
    end

    test "an unknown id is PF404; a type with an initial state activates it instead" do
      r = counter_reactor!()
      :ok = Actors.register(r, "virtual", Virtual)

      assert {:error, %Error{code: "PF404", message: "no actor counter/ghost: create it first"}} =
               Actors.send(r, %ActorRef{type: "counter", id: "ghost"}, %{type: "get_value"})

      v = %ActorRef{type: "virtual", id: "anything"}
      assert {:ok, %{"value" => 1}} = Actors.send(r, v, %{type: "increment"})
      assert {:ok, %{"value" => 1}} = Actors.send(r, v, %{type: "get_value"})

      assert {:error, %Error{code: "PF400", message: message}} =
               Actors.send(r, v, %{type: "decrement"})

      assert message =~ "get_value, increment"
    end

    test "stats list each type's counters" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 0})
      :ok = Actors.tell(r, counter, %{type: "raise"})

      wait_until(
        fn -> match?([%{tells_failed: 1}], Reactor.stats(r).actors) end,
        2_000,
        "the failed tell to be counted"
      )

      assert [
               %{
                 actor_type: "counter",
                 active: 1,
                 passivated: 0,
                 activations: 1,
                 passivations: 0,
                 tells_failed: 1
               }
             ] = Reactor.stats(r).actors

      assert Enum.any?(Reactor.stats(r).handlers, &(&1.element == "actor.counter"))
    end
  end

  describe "tell" do
    test "tells from one process are handled in the order they were made" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 0})
      for i <- 1..200, do: :ok = Actors.tell(r, counter, %{type: "append", item: i})
      assert {:ok, items} = Actors.send(r, counter, %{type: "items"})
      assert items == Enum.to_list(1..200)
    end

    test "a tell the core refuses at once is an error" do
      r = counter_reactor!()

      assert {:error, %Error{code: "PF400", message: message}} =
               Actors.tell(r, %ActorRef{type: "counter", id: String.duplicate("x", 129)}, %{
                 type: "x"
               })

      assert message =~ "id"
    end
  end

  describe "the turn's context" do
    test "handle_message/4 gets the actor's address and can call handlers" do
      r = start_reactor!()
      :ok = Actors.register(r, "relay", Relay)
      :ok = Reactor.register(r, "df", "double", fn n -> n * 2 end)
      a = %ActorRef{type: "relay", id: "a"}

      assert {:ok, %{"actor" => %{"type" => "relay", "id" => "a"}, "packet_id" => "p-1"}} =
               Actors.send(r, a, %{type: "whoami"}, id: "p-1")

      assert {:ok, 42} = Actors.send(r, a, %{type: "double", n: 21})
    end

    test "a message that comes back to a waiting actor runs at once: it reads, and may not write" do
      r = start_reactor!()
      :ok = Actors.register(r, "relay", Relay)
      a = %ActorRef{type: "relay", id: "a"}

      # a -> b -> a (read): without the chain this would wait for a's own
      # turn until the deadline.
      assert {:ok, %{"ok" => %{"ok" => %{"seen" => 0}}}} =
               Actors.send(r, a, %{type: "round_trip", via: "b", op: "read"}, timeout_ms: 5_000)

      assert {:ok, %{"ok" => %{"error" => "PF409"}}} =
               Actors.send(r, a, %{type: "round_trip", via: "b", op: "write"}, timeout_ms: 5_000)

      assert {:ok, %{"seen" => 2}} = Actors.send(r, a, %{type: "read"})
    end

    test "Context.tell reaches the other actor" do
      r = start_reactor!()
      :ok = Actors.register(r, "relay", Relay)
      a = %ActorRef{type: "relay", id: "a"}
      b = %ActorRef{type: "relay", id: "b"}
      assert {:ok, "told"} = Actors.send(r, a, %{type: "tell", to: "b"})

      wait_until(
        fn -> match?({:ok, %{"seen" => 1}}, Actors.send(r, b, %{type: "read"})) end,
        2_000,
        "the told message to be handled"
      )
    end

    test "Context.send and Context.tell take a priority and a timeout of their own" do
      r = start_reactor!()
      :ok = Actors.register(r, "relay", Relay)
      a = %ActorRef{type: "relay", id: "a"}
      b = %ActorRef{type: "relay", id: "b"}

      assert {:ok, answer} =
               Actors.send(r, a, %{type: "with_options", to: "b"}, priority: 4, timeout_ms: 30_000)

      assert answer == %{
               "sent" => %{"ok" => %{"priority" => 9, "short" => true}},
               "inherited" => %{"ok" => %{"priority" => 4, "short" => false}},
               "refused" => [
                 "PF400: priority must be an integer 1-10, got 11",
                 "PF400: timeout_ms must be a positive integer <= 86400000, got 0"
               ]
             }

      wait_until(
        fn -> match?({:ok, %{"noted" => 2}}, Actors.send(r, b, %{type: "read"})) end,
        2_000,
        "the told message to be handled at its own priority"
      )
    end
  end

  describe "over the network" do
    test "an actor hosted by one reactor is created and messaged from another" do
      host = counter_reactor!()
      {:ok, %{url: url}} = Reactor.listen(host, "127.0.0.1:0")
      client = start_reactor!()
      :ok = Reactor.connect(client, url)

      assert {:ok, %ActorRef{id: "remote"} = remote} =
               Actors.create(client, "counter", %{value: 10}, id: "remote")

      assert {:ok, %{"value" => 11}} = Actors.send(client, remote, %{type: "increment"})
      assert :ok = Actors.tell(client, remote, %{type: "increment"})
      wait_until(fn -> value(host, remote) == 12 end, 2_000, "the remote tell")
      assert :ok = Actors.stop(client, remote)
      assert {:ok, []} = Actors.list(host, "counter")
    end
  end

  describe "bad input" do
    test "what is not an actor type, an address or an option raises ArgumentError" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 0})

      assert_raise ArgumentError, ~r/not an actor type/, fn -> Actors.register(r, "x", String) end
      assert_raise ArgumentError, ~r/is a module/, fn -> Actors.register(r, "x", "Counter") end

      assert_raise ArgumentError, ~r/unknown keys \[:colour\]/, fn ->
        Actors.send(r, counter, %{type: "get_value"}, colour: 1)
      end

      assert_raise ArgumentError, ~r/data\.pid is a pid/, fn ->
        Actors.send(r, counter, %{type: "x", pid: self()})
      end

      assert_raise ArgumentError, ~r/string :type and :id/, fn ->
        Actors.send(r, %ActorRef{type: :counter, id: 1}, %{})
      end

      assert_raise ArgumentError, ~r/id must be a string/, fn ->
        Actors.create(r, "counter", nil, id: 1)
      end
    end

    test "what the core refuses is PF400 naming the field" do
      r = counter_reactor!()
      {:ok, counter} = Actors.create(r, "counter", %{value: 0})

      assert {:error, %Error{code: "PF400", message: message}} = Actors.send(r, counter, %{by: 1})
      assert message =~ "data.type"

      assert {:error, %Error{code: "PF400", message: message}} =
               Actors.send(r, counter, %{type: "increment"}, priority: 11)

      assert message =~ "priority"

      assert {:error, %Error{code: "PF400", message: message}} =
               Actors.create(r, "counter", nil, id: String.duplicate("x", 129))

      assert message =~ "id"

      assert {:error, %Error{code: "PF400"}} = Actors.register(r, "bad type!", Counter)

      assert_raise Error, ~r/PF400.*actor_passivate_after/, fn ->
        Reactor.start_link(actor_passivate_after_ms: 0)
      end
    end

    test "a module that uses PacketFlow.Actor without handle_message does not compile" do
      assert_raise CompileError,
                   ~r/defines neither handle_message\/3 nor handle_message\/4/,
                   fn ->
                     Code.compile_string("""
                     defmodule PacketFlow.ActorsTest.Empty do
                       use PacketFlow.Actor
                     end
                     """)
                   end
    end
  end
end
