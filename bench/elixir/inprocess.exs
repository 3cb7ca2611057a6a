# In-process throughput of the Elixir package: submit -> Elixir handler ->
# result with N calls in flight, next to plain GenServer.call round trips
# measured in the same run.
#
#   cd bindings-elixir && MIX_ENV=prod mix run ../bench/elixir/inprocess.exs \
#       [--n 200000] [--inflight 100] [--trials 5] [--json]
#
# --json: one JSON line per variant and trial instead of the table (for
# bench/elixir/ab.py).
#
# Every variant runs `n` calls from `inflight` processes, each making its
# next call as soon as the last one returned. Variants are interleaved in
# each trial, after a warm-up of each. The handler (and the baseline
# servers) upcase "hello world".

defmodule Bench.Echo do
  @moduledoc false
  # The baseline: a plain GenServer answering in handle_call.
  use GenServer
  def init(:ok), do: {:ok, nil}
  def handle_call({:upper, data}, _from, s), do: {:reply, {:ok, String.upcase(data)}, s}
end

defmodule Bench.TaskPerCall do
  @moduledoc false
  # What an Elixir developer might write for the same shape: a GenServer
  # that runs each request in a linked Task which replies to the caller.
  use GenServer

  def init(:ok) do
    Process.flag(:trap_exit, true)
    {:ok, nil}
  end

  def handle_call({:upper, data}, from, s) do
    {:ok, _} = Task.start_link(fn -> GenServer.reply(from, {:ok, String.upcase(data)}) end)
    {:noreply, s}
  end

  def handle_info({:EXIT, _, _}, s), do: {:noreply, s}
end

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
end

{opts, _, _} = OptionParser.parse(System.argv(), strict: [n: :integer, inflight: :integer, trials: :integer, json: :boolean])
n = Keyword.get(opts, :n, 200_000)
inflight = Keyword.get(opts, :inflight, 100)
trials = Keyword.get(opts, :trials, 5)
per = div(n, inflight)

load = fn -> "/proc/loadavg" |> File.read!() |> String.split() |> Enum.take(3) |> Enum.join(" ") end
load_before = load.()

alias PacketFlow.Reactor
{:ok, r} = Reactor.start_link(reactor_name: "bench")
:ok = Reactor.register(r, "df", "upper", fn data, _ctx -> String.upcase(data) end)
{:ok, echo} = GenServer.start_link(Bench.Echo, :ok)
{:ok, tasky} = GenServer.start_link(Bench.TaskPerCall, :ok)

variants = [
  {"GenServer.call round trip (handle_call replies)", fn -> GenServer.call(echo, {:upper, "hello world"}) end},
  {"GenServer.call + a Task per call replying", fn -> GenServer.call(tasky, {:upper, "hello world"}) end},
  {"**PacketFlow.Reactor.call -> handler -> data**", fn -> Reactor.call(r, "df", "upper", "hello world") end},
  {"PacketFlow.Reactor.submit -> %Result{}", fn -> Reactor.submit(r, %{group: "df", element: "upper", data: "hello world"}) end}
]

for {_, fun} <- variants, do: Bench.run(inflight, max(div(per, 10), 1), fun)

runs =
  for _ <- 1..trials do
    for {_, fun} <- variants, do: Bench.measure(inflight, per, fun)
  end

if opts[:json] do
  for {run, trial} <- Enum.with_index(runs), {{label, _}, {rate, cpu}} <- Enum.zip(variants, run) do
    IO.puts(PacketFlow.JSON.encode!(%{variant: label, trial: trial, calls_per_s: rate, cpu_us_per_call: cpu}))
  end

  System.halt(0)
end

IO.puts(
  "n=#{inflight * per} inflight=#{inflight} trials=#{trials} schedulers=#{System.schedulers_online()} " <>
    "otp=#{System.otp_release()} elixir=#{System.version()} load before=#{load_before} after=#{load.()}"
)

IO.puts("")
IO.puts("| variant | calls/s median (min-max) | vs GenServer.call | CPU us/call (median) |")
IO.puts("|---|---|---|---|")
k = fn x -> "#{round(x / 1000)}k" end
base = runs |> Enum.map(&(&1 |> hd() |> elem(0))) |> Bench.median()

variants
|> Enum.with_index()
|> Enum.each(fn {{label, _}, i} ->
  rates = Enum.map(runs, &(&1 |> Enum.at(i) |> elem(0)))
  cpus = Enum.map(runs, &(&1 |> Enum.at(i) |> elem(1)))
  med = Bench.median(rates)

  IO.puts(
    "| #{label} | #{k.(med)} (#{k.(Enum.min(rates))}-#{k.(Enum.max(rates))}) | " <>
      "#{:erlang.float_to_binary(med / base, decimals: 3)} | #{:erlang.float_to_binary(Bench.median(cpus), decimals: 1)} |"
  )
end)
