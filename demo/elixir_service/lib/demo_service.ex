defmodule DemoService do
  @moduledoc """
  The demo's Elixir service: majority votes, served over PacketFlow. Its own
  `co:vote` handler takes the key from the standard element of that name,
  as a user's handler always does.
  """

  @doc "Connects to the hub at `url`, serves `co:vote`, and runs until stdin closes."
  @spec main(String.t()) :: :ok
  def main(url) do
    {:ok, r} = PacketFlow.Reactor.start_link(reactor_name: "elixir-service")
    :ok = PacketFlow.Reactor.register(r, "co", "vote", &vote/1)
    :ok = PacketFlow.Reactor.connect(r, url)
    IO.puts("ready")
    # Serve until the demo closes our stdin.
    IO.read(:stdio, :eof)
    PacketFlow.Reactor.stop(r)
  end

  # A list of ballots, or (as a step of the demo's pipeline) ballots with
  # the trail of the steps before, which the answer carries on.
  defp vote(%{"ballots" => ballots, "served_by" => trail}),
    do: Map.put(vote(ballots), "served_by", trail ++ ["elixir"])

  defp vote(ballots) when is_list(ballots) do
    {winner, count} = ballots |> Enum.frequencies() |> Enum.max_by(fn {_, n} -> n end)
    %{"winner" => winner, "votes" => count, "of" => length(ballots), "served_by" => "elixir"}
  end
end
