defmodule PacketFlow.Context do
  @moduledoc """
  What a handler knows about the packet it serves, passed as its second
  argument.

  `:packet_id` and `:metadata` are plain fields; `remaining_ms/1`,
  `trace_id/1` and `call/4` ask the runtime. A context is only meaningful
  while its handler runs.
  """

  alias PacketFlow.Native

  @enforce_keys [:packet_id, :token]
  defstruct [:packet_id, :metadata, :token]

  @type t :: %__MODULE__{
          packet_id: String.t(),
          metadata: %{optional(String.t()) => PacketFlow.value()} | nil,
          token: reference()
        }

  # A child call is answered by its deadline, which is at most the
  # parent's; this margin only guards against a runtime that failed to.
  @grace_ms 5_000

  @doc "Milliseconds left before the packet's deadline (0 once it passed)."
  @spec remaining_ms(t()) :: non_neg_integer()
  def remaining_ms(%__MODULE__{token: token}), do: Native.context_remaining_ms(token)

  @doc """
  The trace id this packet shares with its child calls: its
  `"pf.trace_id"` metadata, or its own id when it started the trace.
  """
  @spec trace_id(t()) :: String.t()
  def trace_id(%__MODULE__{token: token}), do: Native.context_trace_id(token)

  @doc """
  Calls another handler on behalf of this packet and waits for its data.

  The child packet inherits what is left of this packet's deadline and its
  trace id, so a chain of calls never outlives the first submit. Waiting
  happens in the calling process (a receive), never in a NIF. Once the
  handler has answered, a call fails with PF503 (a child must not outlive
  its parent): make child calls before returning.

  Raises `ArgumentError` if `data` is not JSON-shaped.
  """
  @spec call(t(), PacketFlow.name(), PacketFlow.name(), PacketFlow.value()) ::
          {:ok, PacketFlow.value()} | {:error, PacketFlow.Error.t()}
  def call(%__MODULE__{token: token} = ctx, group, element, data \\ nil) do
    tag = System.unique_integer([:positive])
    group = PacketFlow.name!(group, "group")
    element = PacketFlow.name!(element, "element")

    case Native.context_call(token, group, element, data, tag) do
      {:ok, answer} ->
        answer

      :pending ->
        wait = remaining_ms(ctx) + @grace_ms

        receive do
          {:pf_child, ^tag, answer} -> answer
        after
          wait -> exit({:timeout, {__MODULE__, :call, [group, element]}})
        end

      {:badarg, message} ->
        raise ArgumentError, message
    end
  end
end
