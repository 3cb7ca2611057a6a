# In-process throughput of actors in the Elixir package: N messages from
# `inflight` processes to ONE counter actor (each process sending its next
# message as soon as the last was answered), beside plain handler calls of
# the same shape and the Elixir baseline for one stateful process, measured
# in the same run.
#
#   cd bindings-elixir && MIX_ENV=prod mix run ../bench/elixir/actors.exs \
#       [--n 200000] [--inflight 100] [--trials 5] [--json]
#
# Variants, interleaved in each trial after a warm-up of each:
#   - a GenServer counter (GenServer.call, handle_call increments): what an
#     Elixir developer writes for one stateful process;
#   - Reactor.call to an Elixir handler given the same message and
#     answering the same reply (no state): the plain handler call;
#   - Actors.send to one counter (use PacketFlow.Actor): one mailbox, one
#     turn at a time, the state committed after each turn;
#   - Actors.send to one counter per sending process (100 actors).
# --json: one JSON line per variant and trial (for bench/elixir/ab.py-like
# A/B runs).

defmodule Bench.Counter do
  @moduledoc false
  use PacketFlow.Actor

  @impl true
  def handle_message("increment", _message, %{"value" => value} = state) do
    value = value + 1
    {:reply, %{"value" => value}, %{state | "value" => value}}
  end
end

defmodule Bench.GenCounter do
  @moduledoc false
  use GenServer
  def init(value), do: {:ok, value}
  def handle_call(%{type: "increment"}, _from, value), do: {:reply, {:ok, %{"value" => value + 1}}, value + 1}
end

Code.require_file("harness.exs", __DIR__)

{opts, _, _} = OptionParser.parse(System.argv(), strict: [n: :integer, inflight: :integer, trials: :integer, json: :boolean])
n = Keyword.get(opts, :n, 200_000)
inflight = Keyword.get(opts, :inflight, 100)
trials = Keyword.get(opts, :trials, 5)
per = div(n, inflight)
load_before = Bench.load()

alias PacketFlow.{Actors, Reactor}
{:ok, r} = Reactor.start_link(reactor_name: "bench")
:ok = Reactor.register(r, "df", "increment", fn _message, _ctx -> %{"value" => 1} end)
:ok = Actors.register(r, "counter", Bench.Counter)
{:ok, counter} = Actors.create(r, "counter", %{value: 0})
{:ok, gen_counter} = GenServer.start_link(Bench.GenCounter, 0)
message = %{type: "increment"}

# One counter per sending process, found by the process (a process makes
# its own the first time it sends).
per_process = fn ->
  actor =
    Process.get(:bench_counter) ||
      (fn ->
         {:ok, actor} = Actors.create(r, "counter", %{value: 0})
         Process.put(:bench_counter, actor)
         actor
       end).()

  Actors.send(r, actor, message)
end

variants = [
  {"GenServer counter (GenServer.call, one process)", fn -> GenServer.call(gen_counter, message) end},
  {"Reactor.call -> Elixir handler (no state)", fn -> Reactor.call(r, "df", "increment", message) end},
  {"**Actors.send -> one counter actor**", fn -> Actors.send(r, counter, message) end},
  {"Actors.send -> a counter actor per sender (#{inflight} actors)", per_process}
]

for {_, fun} <- variants, do: Bench.run(inflight, max(div(per, 10), 1), fun)

runs =
  for _ <- 1..trials do
    for {_, fun} <- variants, do: Bench.measure(inflight, per, fun)
  end

# Every message reached the one counter, once.
{:ok, %{"value" => value}} = Actors.send(r, counter, message)
expected = (trials * per + max(div(per, 10), 1)) * inflight + 1
if value != expected, do: raise("the counter is at #{value}, expected #{expected}")

Bench.report(variants, runs, opts[:json], "GenServer counter",
  "n=#{inflight * per} inflight=#{inflight} trials=#{trials} schedulers=#{System.schedulers_online()} " <>
    "otp=#{System.otp_release()} elixir=#{System.version()} load before=#{load_before} after=#{Bench.load()}"
)

if opts[:json], do: System.halt(0)
