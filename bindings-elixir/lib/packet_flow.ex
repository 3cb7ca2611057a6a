defmodule PacketFlow do
  @moduledoc """
  PacketFlow for Elixir: register handlers for `group:element` names,
  submit packets to them, get one result per packet.

      {:ok, reactor} = PacketFlow.Reactor.start_link(name: MyApp.Reactor)

      :ok =
        PacketFlow.Reactor.register(reactor, "df", "upper", fn data, _ctx ->
          String.upcase(data)
        end)

      {:ok, "HELLO"} = PacketFlow.Reactor.call(reactor, "df", "upper", "hello")

      {:ok, %PacketFlow.Result{status: :success, data: "HI"}} =
        PacketFlow.Reactor.submit(reactor, %{group: "df", element: "upper", data: "hi", priority: 9})

  The runtime is PacketFlow's Rust core, loaded as a NIF. It never blocks a
  scheduler: a submit is one NIF call in the calling process, whose result
  comes back to it as a message; handlers run in a pool of worker
  processes. See `PacketFlow.Reactor` for the API,
  `PacketFlow.Context` for what a handler receives, and `PacketFlow.Error`
  for the error codes.

  Stateful actors (one mailbox each, transactional turns, durable state)
  are modules using `PacketFlow.Actor`, driven through `PacketFlow.Actors`.

  ## Values

  Packet data, metadata and handler results cross as JSON values: maps
  (string or atom keys), lists, UTF-8 binaries, integers, floats, `true`,
  `false` and `nil`. Other atoms cross as strings. Maps come back with
  string keys. Tuples, pids, references, functions, ports and binaries that
  are not UTF-8 raise `ArgumentError` naming the type and where it was
  (`data.items[2] is a tuple, ...`).
  """

  @typedoc "A JSON-shaped value."
  @type value ::
          nil
          | boolean()
          | number()
          | String.t()
          | atom()
          | [value()]
          | %{optional(String.t() | atom()) => value()}

  @typedoc "A group (`\"df\"`) or element (`\"transform\"`) name, as a string or an atom."
  @type name :: String.t() | atom()

  @doc false
  @spec name!(term(), String.t()) :: String.t()
  def name!(name, _what) when is_binary(name), do: name

  def name!(name, _what) when is_atom(name) and name not in [nil, true, false],
    do: Atom.to_string(name)

  def name!(other, what) do
    raise ArgumentError, "#{what} must be a string or an atom, got: #{inspect(other)}"
  end
end
