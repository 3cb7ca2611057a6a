defmodule DemoService do
  @moduledoc "The demo's Elixir service: majority votes, served over PacketFlow."

  @doc "Connects to the hub at `url`, serves `co:vote`, and runs until stdin closes."
  @spec main(String.t()) :: :ok
  def main(url) do
    {:ok, r} = PacketFlow.Reactor.start_link(reactor_name: "elixir-service")

    :ok =
      PacketFlow.Reactor.register(r, "co", "vote", fn ballots, _ctx ->
        {winner, count} = ballots |> Enum.frequencies() |> Enum.max_by(fn {_, n} -> n end)
        %{"winner" => winner, "votes" => count, "of" => length(ballots), "served_by" => "elixir"}
      end)

    :ok = PacketFlow.Reactor.connect(r, url)
    IO.puts("ready")
    # Serve until the demo closes our stdin.
    IO.read(:stdio, :eof)
    PacketFlow.Reactor.stop(r)
  end
end
