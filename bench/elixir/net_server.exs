# An Elixir handler behind a PacketFlow node: `df:transform` upcases a
# string, like the plain servers of the reference peers.
#
#   cd bindings-elixir && MIX_ENV=prod mix run ../bench/elixir/net_server.exs PORT
#
# Prints `listening on URL pid OS_PID` on stderr once it accepts peers and
# serves until stdin closes or the process is signalled.
alias PacketFlow.Reactor

[port] = System.argv()
{:ok, r} = Reactor.start_link(reactor_name: "elixir-bench")
:ok = Reactor.register(r, "df", "transform", fn data, _ctx -> String.upcase(data) end)
{:ok, %{url: url}} = Reactor.listen(r, "127.0.0.1:#{port}")
IO.puts(:stderr, "listening on #{url} pid #{System.pid()}")
IO.read(:stdio, :eof)
Reactor.stop(r)
