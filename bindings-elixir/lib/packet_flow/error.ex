defmodule PacketFlow.Error do
  # The table of codes comes from the core (`ErrorCode::ALL` and its
  # descriptions, through the native library), read when this module is
  # compiled: a code the core adds shows here without an edit. The module
  # is recompiled whenever the library changes.
  @external_resource Path.expand("../../priv/native/libpacketflow_nif.so", __DIR__)
  @codes PacketFlow.Native.error_codes()

  @moduledoc """
  A PacketFlow error: a protocol code and a message for people.

  It is what `PacketFlow.Reactor.call/5` returns as `{:error, error}` and what
  `%PacketFlow.Result{}` carries in `:error`. It is an exception too, so it
  can be raised where failing loudly suits better.

  The codes, as the core defines them (`codes/0` lists them at run time):

  | code | meaning |
  |---|---|
  #{Enum.map_join(@codes, "\n", fn {code, meaning} -> "| `\"#{code}\"` | #{meaning} |" end)}

  In this package: PF400 also answers a bad tokens file, token entry or TLS
  file given to `PacketFlow.Reactor.listen/3` or `connect/3`, and reactor
  options the core refuses (raised by `PacketFlow.Reactor.start_link/1`);
  PF401 is a node refusing the token `connect/3` presented; PF500 is a
  handler that raised, threw, exited, returned something that is not a
  JSON value, or whose process ended without answering; PF503 is also a
  `PacketFlow.Context.call/5` made after its handler answered. Codes from
  newer peers pass through unchanged.
  """

  defexception [:code, :message]

  @typedoc "A protocol error code such as `\"PF500\"`."
  @type code :: String.t()

  @type t :: %__MODULE__{code: code(), message: String.t()}

  @doc """
  The core's error codes, each with what it means:
  `[{"PF001", "no handler for group:element ..."}, ...]`.
  """
  @spec codes() :: [{code(), String.t()}]
  def codes, do: PacketFlow.Native.error_codes()

  @doc "The code and the message, as in `\"PF408: df:slow did not answer in time\"`."
  @impl true
  @spec message(t()) :: String.t()
  def message(%__MODULE__{code: code, message: message}), do: "#{code}: #{message}"
end
