# The Elixir submitter of the matrix: connects a PacketFlow.Reactor to a hub
# and calls `df:transform` with "hello world" (every answer must be
# "HELLO WORLD").
#
#   cd bindings-elixir && MIX_ENV=prod mix run --no-compile ../bench/matrix/submit.exs seq  HUB_URL [--n 2000] [--warmup 500]
#   cd bindings-elixir && MIX_ENV=prod mix run --no-compile ../bench/matrix/submit.exs pipe HUB_URL [--n 200000] [--inflight 100] [--warmup 20000]
#
# seq: N calls one after another (after the warm-up); round-trip p50/p95/p99
# in µs. pipe: INFLIGHT processes each keep one call in flight on the
# reactor's one connection until N are answered (after a warm-up of the same
# shape); packets/s and the OS process's CPU per packet. Prints one JSON line.
defmodule MatrixSubmit do
  alias PacketFlow.Reactor

  @expect "HELLO WORLD"

  def main(argv) do
    {opts, [mode, url], []} =
      OptionParser.parse(argv, strict: [n: :integer, warmup: :integer, inflight: :integer, timeout: :integer])

    {:ok, r} = Reactor.start_link(reactor_name: "matrix-elixir-submitter")
    :ok = Reactor.connect(r, url)
    timeout_ms = Keyword.get(opts, :timeout, 300) * 1000

    task =
      Task.async(fn ->
        case mode do
          "seq" -> seq(r, Keyword.get(opts, :n, 2000), Keyword.get(opts, :warmup, 500))
          "pipe" -> pipe(r, Keyword.get(opts, :n, 200_000), Keyword.get(opts, :inflight, 100), Keyword.get(opts, :warmup, 20_000))
        end
      end)

    out = Task.await(task, timeout_ms)
    :ok = Reactor.stop(r)
    IO.puts(PacketFlow.JSON.encode!(Map.merge(%{"submitter" => "elixir", "url" => url}, out)))
  end

  defp call!(r) do
    case Reactor.call(r, "df", "transform", "hello world") do
      {:ok, @expect} -> :ok
      other -> raise "unexpected answer #{inspect(other)}"
    end
  end

  defp seq(r, n, warmup) do
    for _ <- 1..warmup//1, do: call!(r)

    lat =
      for _ <- 1..n//1 do
        t0 = System.monotonic_time(:nanosecond)
        call!(r)
        System.monotonic_time(:nanosecond) - t0
      end

    sorted = Enum.sort(lat)

    %{"mode" => "seq", "n" => n, "warmup" => warmup, "p50_us" => pct(sorted, 50), "p95_us" => pct(sorted, 95),
      "p99_us" => pct(sorted, 99), "mean_us" => Enum.sum(lat) / n / 1000}
  end

  # nearest rank on n-1 intervals, in µs
  defp pct(sorted, p), do: Enum.at(sorted, min(length(sorted) - 1, round(p / 100 * (length(sorted) - 1)))) / 1000

  # Keeps `inflight` calls outstanding until `n` are answered: a counter
  # shared by `inflight` lanes, each a process making its next call as soon
  # as the last one returned.
  defp window(r, n, inflight) do
    left = :atomics.new(1, signed: true)
    :atomics.put(left, 1, n)

    lane = fn ->
      Stream.repeatedly(fn -> :atomics.sub_get(left, 1, 1) end)
      |> Stream.take_while(&(&1 >= 0))
      |> Enum.each(fn _ -> call!(r) end)
    end

    1..min(inflight, n)//1
    |> Enum.map(fn _ -> Task.async(lane) end)
    |> Task.await_many(:infinity)
  end

  defp pipe(r, n, inflight, warmup) do
    if warmup > 0, do: window(r, warmup, inflight)
    c0 = cpu_s()
    t0 = System.monotonic_time(:nanosecond)
    window(r, n, inflight)
    wall = (System.monotonic_time(:nanosecond) - t0) / 1.0e9
    cpu = cpu_s() - c0

    %{"mode" => "pipe", "n" => n, "inflight" => inflight, "warmup" => warmup, "pps" => n / wall, "wall_s" => wall,
      "cpu_us_per_packet" => cpu * 1.0e6 / n}
  end

  # utime + stime of the whole OS process (schedulers and the library's threads)
  defp cpu_s do
    stat = File.read!("/proc/self/stat")
    [_, rest] = String.split(stat, ") ", parts: 2)
    fields = String.split(rest)
    (String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))) / 100
  end
end

MatrixSubmit.main(System.argv())
