defmodule PacketFlow.Error do
  @moduledoc """
  A PacketFlow error: a protocol code and a message for people.

  It is what `PacketFlow.Reactor.call/5` returns as `{:error, error}` and what
  `%PacketFlow.Result{}` carries in `:error`. It is an exception too, so it
  can be raised where failing loudly suits better.

  | code | meaning |
  |---|---|
  | `"PF001"` | no handler for `group:element` here or on any reachable peer |
  | `"PF400"` | malformed packet (the message names the field), or a bad tokens file, token or TLS file given to `PacketFlow.Reactor.listen/3` or `connect/3` |
  | `"PF401"` | a node refused the token presented by `PacketFlow.Reactor.connect/3` (or wanted one) |
  | `"PF403"` | the connection's token may not submit this `group:element` |
  | `"PF408"` | `timeout_ms` elapsed before a result |
  | `"PF409"` | a packet with the same id is already in flight |
  | `"PF424"` | a dependency failed or timed out |
  | `"PF429"` | overloaded: the queue is full (backpressure) |
  | `"PF500"` | the handler raised, threw, exited or returned something that is not a JSON value |
  | `"PF503"` | the reactor (or the peer holding the packet) is stopping or gone; a peer that cannot be reached or fails the TLS handshake |

  Codes from newer peers pass through unchanged.
  """

  defexception [:code, :message]

  @typedoc "A protocol error code such as `\"PF500\"`."
  @type code :: String.t()

  @type t :: %__MODULE__{code: code(), message: String.t()}

  @doc "The code and the message, as in `\"PF408: df:slow did not answer in time\"`."
  @impl true
  @spec message(t()) :: String.t()
  def message(%__MODULE__{code: code, message: message}), do: "#{code}: #{message}"
end
