# What the in-process harnesses share (inprocess.exs, actors.exs): running
# calls from many processes at once, and the CPU time they cost.

defmodule Bench do
  @moduledoc false

  # `inflight` processes each run `per` calls back to back; returns calls/s.
  def run(inflight, per, fun) do
    parent = self()
    t0 = System.monotonic_time(:microsecond)

    pids =
      for _ <- 1..inflight do
        spawn_link(fn ->
          for _ <- 1..per, do: {:ok, _} = fun.()
          send(parent, {:done, self()})
        end)
      end

    for pid <- pids, do: receive(do: ({:done, ^pid} -> :ok))
    inflight * per / (System.monotonic_time(:microsecond) - t0) * 1.0e6
  end

  # CPU time of this OS process (all BEAM and runtime threads), in us.
  def cpu_us do
    [_, rest] = "/proc/self/stat" |> File.read!() |> String.split(") ", parts: 2)
    fields = String.split(rest, " ")
    ticks = String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
    div(ticks * 1_000_000, 100)
  end

  # {calls/s, CPU us per call}
  def measure(inflight, per, fun) do
    c0 = cpu_us()
    rate = run(inflight, per, fun)
    {rate, (cpu_us() - c0) / (inflight * per)}
  end

  def median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))

  # The load average over 1, 5 and 15 minutes.
  def load, do: "/proc/loadavg" |> File.read!() |> String.split() |> Enum.take(3) |> Enum.join(" ")

  # Prints `runs` (one list of {calls/s, CPU us} per trial, in the order of
  # `variants`, each a {label, fun}): one JSON line per variant and trial
  # when `json`, else `header` and a Markdown table of medians, with rates
  # relative to the first variant (named `base` in the column's title).
  def report(variants, runs, json, base_name, header) do
    if json do
      for {run, trial} <- Enum.with_index(runs), {{label, _}, {rate, cpu}} <- Enum.zip(variants, run) do
        IO.puts(PacketFlow.JSON.encode!(%{variant: label, trial: trial, calls_per_s: rate, cpu_us_per_call: cpu}))
      end
    else
      IO.puts(header)
      IO.puts("")
      IO.puts("| variant | calls/s median (min-max) | vs #{base_name} | CPU us/call (median) |")
      IO.puts("|---|---|---|---|")
      k = fn x -> "#{round(x / 1000)}k" end
      base = runs |> Enum.map(&(&1 |> hd() |> elem(0))) |> median()

      variants
      |> Enum.with_index()
      |> Enum.each(fn {{label, _}, i} ->
        rates = Enum.map(runs, &(&1 |> Enum.at(i) |> elem(0)))
        cpus = Enum.map(runs, &(&1 |> Enum.at(i) |> elem(1)))
        med = median(rates)

        IO.puts(
          "| #{label} | #{k.(med)} (#{k.(Enum.min(rates))}-#{k.(Enum.max(rates))}) | " <>
            "#{:erlang.float_to_binary(med / base, decimals: 3)} | #{:erlang.float_to_binary(median(cpus), decimals: 1)} |"
        )
      end)
    end
  end
end
