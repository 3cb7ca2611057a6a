# The install check's Elixir service (run by `mix run` in a fresh Mix
# project that depends on the Hex package from dist/): df:install_elixir
# calls the Node.js service through the hub and adds its own step.
[url] = System.argv()
{:ok, r} = PacketFlow.Reactor.start_link(reactor_name: "install-elixir")

:ok =
  PacketFlow.Reactor.register(r, "df", "install_elixir", fn text, ctx ->
    case PacketFlow.Context.call(ctx, "df", "install_node", text) do
      {:ok, %{"text" => text, "path" => path}} -> %{"text" => text, "path" => ["elixir" | path]}
      {:error, error} -> raise "df:install_node failed: #{error.code} #{error.message}"
    end
  end)

:ok = PacketFlow.Reactor.connect(r, url)
IO.puts("ready")
# Serve until the check closes our stdin.
IO.read(:stdio, :eof)
PacketFlow.Reactor.stop(r)
