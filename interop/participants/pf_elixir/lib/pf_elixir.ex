defmodule PfElixir do
  @moduledoc """
  The Elixir participant of the interop suite (see ../README.md):

      mix run --no-compile -e 'PfElixir.main(System.argv())' -- serve HUB_URL NAME [json|msgpack]
      mix run --no-compile -e 'PfElixir.main(System.argv())' -- submit HUB_URL [json|msgpack]
      mix run --no-compile -e 'PfElixir.main(System.argv())' -- dial URL
  """

  alias PacketFlow.Reactor

  @doc "Runs the mode named by the arguments."
  @spec main([String.t()]) :: :ok
  def main(["serve", url, name | codec]), do: serve(url, name, codec_of(codec) ++ nats_of(url))
  def main(["submit", url | codec]), do: submit(url, codec_of(codec) ++ nats_of(url))
  def main(["dial", url]), do: dial(url)

  defp codec_of(["msgpack"]), do: [msgpack: true]
  defp codec_of(_), do: []

  # For a nats:// URL, the NATS options the suite asks for
  # (PF_NATS_NAMESPACE: the subjects' namespace; PF_NATS_ACTOR_STORE: actor
  # state in the members' bucket, membership with it; PF_NATS_HEARTBEAT_MS:
  # the members' heartbeat).
  defp nats_of("nats://" <> _) do
    for {var, option} <- [
          {"PF_NATS_NAMESPACE", :namespace},
          {"PF_NATS_ACTOR_STORE", :actor_store},
          {"PF_NATS_HEARTBEAT_MS", :membership_heartbeat_ms}
        ],
        value = System.get_env(var),
        value not in [nil, ""] do
      case option do
        :namespace -> {:namespace, value}
        :actor_store -> {:actor_store, true}
        :membership_heartbeat_ms -> {:membership_heartbeat_ms, String.to_integer(value)}
      end
    end
  end

  defp nats_of(_url), do: []

  # The reactor limits the suite asks for (PF_MAX_INFLIGHT, PF_MAX_QUEUE).
  defp limits do
    for {var, key} <- [{"PF_MAX_INFLIGHT", :max_inflight}, {"PF_MAX_QUEUE", :max_queue}],
        value = System.get_env(var),
        do: {key, String.to_integer(value)}
  end

  defp serve(url, name, opts) do
    {:ok, r} = Reactor.start_link([reactor_name: "interop-#{name}"] ++ limits())
    :ok = Reactor.register(r, "df", "echo_#{name}", fn data, _ctx -> data end)
    :ok = Reactor.register(r, "df", "fail_#{name}", fn _data, _ctx -> raise "boom from #{name}" end)

    :ok =
      Reactor.register(r, "df", "slow_#{name}", fn ms, _ctx ->
        Process.sleep(ms)
        ms
      end)

    register_rule_handlers(r, name)
    register_cancel_leaf(r, name)
    register_stdlib_steps(r, name)
    # Actor state in NATS: the types come after joining, so that their
    # store is the members' bucket.
    in_nats = Keyword.get(opts, :actor_store, false)
    if not in_nats, do: :ok = PacketFlow.Actors.register(r, "counter_elixir", PfElixir.Counter)
    :ok = Reactor.connect(r, url, opts)

    if in_nats do
      :ok = PacketFlow.Actors.register(r, "counter_elixir", PfElixir.Counter)
      :persistent_term.put({PfElixir.SharedCounter, :host}, name)
      :ok = PacketFlow.Actors.register(r, "counter_shared", PfElixir.SharedCounter)
    end

    IO.puts("ready")
    IO.read(:stdio, :eof)
    Reactor.stop(r)
  end

  # The last link of test_cancel.py's chain: waits for its packet's
  # cancellation notice and reports it, then when its reactor has nothing in
  # flight, as JSON lines `{event, element, at_us}` (the wall clock in µs).
  defp register_cancel_leaf(r, name) do
    element = "cancel_leaf_#{name}"

    :ok =
      Reactor.register(r, "df", element, fn _data, _ctx ->
        event(%{"event" => "started", "element" => element})

        receive do
          {:packetflow_cancelled, _packet_id} ->
            event(%{"event" => "cancelled", "element" => element})
            spawn(fn -> report_idle(r, element, 1000) end)
            "cancelled"
        after
          30_000 -> "never cancelled"
        end
      end)
  end

  # The steps of test_stdlib.py: `append_NAME` appends NAME to a list;
  # `wait_NAME` (%{"tag"}) reports it started, then waits until
  # `release_NAME` (the tag) releases it or its packet's cancellation notice
  # arrives, and reports which (at most 30 s).
  defp register_stdlib_steps(r, name) do
    element = "wait_#{name}"
    {:ok, waiting} = Agent.start_link(fn -> %{} end)
    :ok = Reactor.register(r, "df", "append_#{name}", fn items -> items ++ [name] end)

    :ok =
      Reactor.register(r, "df", element, fn %{"tag" => tag}, ctx ->
        {id, me} = {ctx.packet_id, self()}
        Agent.update(waiting, &Map.put(&1, tag, me))
        event(%{"event" => "started", "element" => element, "tag" => tag})

        answer =
          receive do
            {:release, ^tag} ->
              event(%{"event" => "released", "element" => element, "tag" => tag})
              tag

            {:packetflow_cancelled, ^id} ->
              event(%{"event" => "cancelled", "element" => element, "tag" => tag})
              "cancelled"
          after
            30_000 -> "never released"
          end

        Agent.update(waiting, &Map.delete(&1, tag))
        answer
      end)

    :ok =
      Reactor.register(r, "df", "release_#{name}", fn tag ->
        case Agent.get(waiting, &Map.get(&1, tag)) do
          nil ->
            false

          pid ->
            send(pid, {:release, tag})
            true
        end
      end)
  end

  defp report_idle(r, element, left) do
    cond do
      Reactor.stats(r).in_flight == 0 ->
        event(%{"event" => "idle", "element" => element})

      left > 0 ->
        Process.sleep(5)
        report_idle(r, element, left - 1)

      true ->
        event(%{"event" => "busy", "element" => element, "in_flight" => Reactor.stats(r).in_flight})
    end
  end

  defp event(fields) do
    IO.puts(PacketFlow.JSON.encode!(Map.put(fields, "at_us", System.os_time(:microsecond))))
  end

  # The handlers of test_rules.py: a context kept past its answer, and a
  # handler replaced while a packet runs it.
  defp register_rule_handlers(r, name) do
    {:ok, kept} = Agent.start_link(fn -> nil end)

    :ok =
      Reactor.register(r, "df", "keep_#{name}", fn _data, ctx ->
        Agent.update(kept, fn _ -> ctx end)
        "kept"
      end)

    :ok =
      Reactor.register(r, "df", "late_#{name}", fn data, _ctx ->
        case PacketFlow.Context.call(Agent.get(kept, & &1), "df", "echo_#{name}", data) do
          {:ok, value} -> %{"data" => value}
          {:error, %PacketFlow.Error{code: code, message: message}} -> %{"code" => code, "message" => message}
        end
      end)

    :ok =
      Reactor.register(r, "df", "version_#{name}", fn ms, _ctx ->
        Process.sleep(ms)
        "v1"
      end)

    :ok =
      Reactor.register(r, "df", "replace_#{name}", fn _data, _ctx ->
        :ok = Reactor.register(r, "df", "version_#{name}", fn _ms, _ctx -> "v2" end)
        "replaced"
      end)
  end

  # Dials `url` and prints how that ended, as {code, message}.
  defp dial(url) do
    {:ok, r} = Reactor.start_link(reactor_name: "interop-elixir-dialer")

    out =
      case Reactor.connect(r, url, []) do
        :ok -> %{"code" => nil, "message" => "connected"}
        {:error, %PacketFlow.Error{code: code, message: message}} -> %{"code" => code, "message" => message}
      end

    IO.puts(PacketFlow.JSON.encode!(out))
    Reactor.stop(r)
  end

  defp submit(url, opts) do
    # PF_STDLIB: the standard elements this reactor hosts (test_stdlib.py).
    {:ok, r} = Reactor.start_link(reactor_name: "interop-elixir-submitter", stdlib: System.get_env("PF_STDLIB"))
    :ok = Reactor.connect(r, url, opts)
    parent = self()

    # A reader starts one process per request line; this process prints
    # each answer as it arrives, and stops once stdin ended and every
    # request was answered.
    spawn_link(fn ->
      count =
        IO.stream(:stdio, :line)
        |> Stream.reject(&(String.trim(&1) == ""))
        |> Enum.reduce(0, fn line, n ->
          spawn_link(fn -> send(parent, {:answer, answer(r, line)}) end)
          n + 1
        end)

      send(parent, {:eof, count})
    end)

    print_answers(0, nil)
    Reactor.stop(r)
  end

  defp print_answers(printed, total) when printed == total, do: :ok

  defp print_answers(printed, total) do
    receive do
      {:answer, line} ->
        IO.puts(line)
        print_answers(printed + 1, total)

      {:eof, count} ->
        print_answers(printed, count)
    end
  end

  defp answer(r, line) do
    req = PacketFlow.JSON.decode!(line)
    packet = %{group: req["group"], element: req["element"], data: req["data"], timeout_ms: req["timeout_ms"]}
    packet = if req["metadata"], do: Map.put(packet, :metadata, req["metadata"]), else: packet
    {:ok, result} = Reactor.submit(r, packet)

    out =
      case result.status do
        :success -> %{"status" => "success", "data" => result.data}
        :error -> %{"status" => "error", "error" => %{"code" => result.error.code, "message" => result.error.message}}
      end

    PacketFlow.JSON.encode!(%{"id" => req["id"], "result" => out})
  end
end

defmodule PfElixir.Counter do
  @moduledoc """
  The interop suite's actor type `counter_elixir`: `increment` (`{"by": n}`
  optional) answers `{"value": n}`, `get_value` reads it; any id starts at
  `{"value": 0}` on its first message.
  """
  use PacketFlow.Actor

  @impl true
  def initial_state, do: %{"value" => 0}

  # Other types are refused by the core (PF400), as for every participant.
  @impl true
  def message_types, do: ["increment", "get_value"]

  @impl true
  def handle_message("increment", message, %{"value" => value} = state) do
    value = value + Map.get(message, "by", 1)
    {:reply, %{"value" => value}, %{state | "value" => value}}
  end

  def handle_message("get_value", _message, state), do: {:reply, %{"value" => state["value"]}, state}
end

defmodule PfElixir.SharedCounter do
  @moduledoc """
  Actor type `counter_shared`, hosted by every language on a NATS cluster:
  `PfElixir.Counter`'s, its answers naming the language that ran the turn
  (`"host"`, set by `serve`).
  """
  use PacketFlow.Actor

  @impl true
  def initial_state, do: PfElixir.Counter.initial_state()

  @impl true
  def message_types, do: PfElixir.Counter.message_types()

  @impl true
  def handle_message(type, message, state) do
    {:reply, reply, state} = PfElixir.Counter.handle_message(type, message, state)
    {:reply, Map.put(reply, "host", :persistent_term.get({__MODULE__, :host})), state}
  end
end
