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

Code.require_file("harness.exs", __DIR__)

{opts, _, _} = OptionParser.parse(System.argv(), strict: [n: :integer, inflight: :integer, trials: :integer, json: :boolean])
n = Keyword.get(opts, :n, 200_000)
inflight = Keyword.get(opts, :inflight, 100)
trials = Keyword.get(opts, :trials, 5)
per = div(n, inflight)

load_before = Bench.load()

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

Bench.report(variants, runs, opts[:json], "GenServer.call",
  "n=#{inflight * per} inflight=#{inflight} trials=#{trials} schedulers=#{System.schedulers_online()} " <>
    "otp=#{System.otp_release()} elixir=#{System.version()} load before=#{load_before} after=#{Bench.load()}"
)

if opts[:json], do: System.halt(0)
