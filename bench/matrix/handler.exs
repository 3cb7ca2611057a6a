# The Elixir handler of the matrix: a PacketFlow.Reactor serving
# `df:transform` (uppercase a string), connected to a hub or listening.
#
#   cd bindings-elixir && MIX_ENV=prod mix run --no-compile ../bench/matrix/handler.exs HUB_URL
#   cd bindings-elixir && MIX_ENV=prod mix run --no-compile ../bench/matrix/handler.exs --listen 127.0.0.1:0
#
# Prints `ready OS_PID` on stdout once `connect` has returned (the hub then
# knows the handler), or `ready OS_PID URL` once listening; serves until
# stdin closes, then stops the reactor.
alias PacketFlow.Reactor

{:ok, r} = Reactor.start_link(reactor_name: "matrix-elixir-handler")
:ok = Reactor.register(r, "df", "transform", fn data, _ctx -> String.upcase(data) end)

case System.argv() do
  ["--listen", addr] ->
    {:ok, %{url: url}} = Reactor.listen(r, addr)
    IO.puts("ready #{System.pid()} #{url}")

  [url] ->
    :ok = Reactor.connect(r, url)
    IO.puts("ready #{System.pid()}")
end

IO.read(:stdio, :eof)
Reactor.stop(r)
