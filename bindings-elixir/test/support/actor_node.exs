# A node the actor tests run as a separate OS process, so that they can
# kill it with SIGKILL (test/actors_test.exs):
#
#     elixir -pa EBIN test/support/actor_node.exs STORE_FILE
#
# It starts a reactor whose actors live in STORE_FILE, registers the
# "counter" type, prints `ready OS_PID`, then runs one JSON request per
# line of stdin and prints one JSON answer per request, in order:
#
#   {"op": "create", "id": ID, "state": STATE}          -> {"ok": {"type", "id"}}
#   {"op": "send", "id": ID, "message": M, "packet_id"?} -> {"ok": REPLY}
#   failures                                             -> {"error": CODE}

defmodule ActorNode.Counter do
  use PacketFlow.Actor

  @impl true
  def handle_message("increment", message, %{"value" => value} = state) do
    value = value + Map.get(message, "by", 1)
    {:reply, %{"value" => value}, %{state | "value" => value}}
  end

  def handle_message("get_value", _message, state),
    do: {:reply, %{"value" => state["value"]}, state}
end

defmodule ActorNode do
  alias PacketFlow.{ActorRef, Actors, JSON, Reactor}

  def main([store]) do
    {:ok, r} = Reactor.start_link(actor_store: store)
    :ok = Actors.register(r, "counter", ActorNode.Counter)
    IO.puts("ready #{System.pid()}")
    serve(r)
  end

  defp serve(r) do
    case IO.read(:stdio, :line) do
      :eof ->
        :ok

      line ->
        line |> JSON.decode!() |> run(r) |> answer() |> JSON.encode!() |> IO.puts()
        serve(r)
    end
  end

  defp run(%{"op" => "create", "id" => id, "state" => state}, r) do
    with {:ok, actor} <- Actors.create(r, "counter", state, id: id),
         do: {:ok, Map.from_struct(actor)}
  end

  defp run(%{"op" => "send", "id" => id, "message" => message} = request, r) do
    opts = if request["packet_id"], do: [id: request["packet_id"]], else: []
    Actors.send(r, %ActorRef{type: "counter", id: id}, message, opts)
  end

  defp answer({:ok, value}), do: %{"ok" => value}
  defp answer({:error, %PacketFlow.Error{code: code}}), do: %{"error" => code}
end

ActorNode.main(System.argv())
