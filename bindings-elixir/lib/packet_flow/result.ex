defmodule PacketFlow.Result do
  @moduledoc """
  The one answer every submitted packet gets.

  `:status` is `:success` with the handler's value in `:data`, or `:error`
  with a `PacketFlow.Error` in `:error`. `:duration_ms` is the time from
  acceptance to answer.
  """

  defstruct [:packet_id, :status, :data, :error, duration_ms: 0]

  @type t :: %__MODULE__{
          packet_id: String.t(),
          status: :success | :error,
          data: PacketFlow.value(),
          error: PacketFlow.Error.t() | nil,
          duration_ms: non_neg_integer()
        }

  @doc "Whether the packet succeeded."
  @spec success?(t()) :: boolean()
  def success?(%__MODULE__{status: status}), do: status == :success

  @doc "`{:ok, data}` for a success, `{:error, %PacketFlow.Error{}}` otherwise."
  @spec to_tuple(t()) :: {:ok, PacketFlow.value()} | {:error, PacketFlow.Error.t()}
  def to_tuple(%__MODULE__{status: :success, data: data}), do: {:ok, data}
  def to_tuple(%__MODULE__{error: error}), do: {:error, error}
end
