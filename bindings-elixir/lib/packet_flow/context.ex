defmodule PacketFlow.Context do
  @moduledoc """
  What a handler knows about the packet it serves, passed as its second
  argument (and to an actor's `handle_message/4`).

  `:packet_id` and `:metadata` are plain fields, and `:actor` is the
  address of the actor whose turn this is (`nil` in a handler);
  `remaining_ms/1`, `trace_id/1`, `call/4`, `send/4` and `tell/4` ask the
  runtime. A context is only meaningful while its handler runs.
  """

  alias PacketFlow.{ActorRef, Native}

  @enforce_keys [:packet_id, :token]
  defstruct [:packet_id, :metadata, :token, :actor]

  @type t :: %__MODULE__{
          packet_id: String.t(),
          metadata: %{optional(String.t()) => PacketFlow.value()} | nil,
          token: reference(),
          actor: ActorRef.t() | nil
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

    child(
      ctx,
      Native.context_call(token, group, element, data, tag),
      tag,
      {:call, [group, element]}
    )
  end

  @doc """
  Sends `message` to `actor` on behalf of this packet and waits for the
  turn's reply, as `call/4` does for a handler (same deadline and trace).

  From an actor's turn, the message carries the turn's reentrancy chain: a
  message that comes back to the waiting actor through it runs at once
  instead of waiting behind the turn (see `PacketFlow.Actor`).

  Raises `ArgumentError` if `message` is not JSON-shaped.
  """
  @spec send(t(), ActorRef.t(), PacketFlow.Actors.message()) ::
          {:ok, PacketFlow.value()} | {:error, PacketFlow.Error.t()}
  def send(%__MODULE__{token: token} = ctx, %ActorRef{} = actor, message) do
    tag = System.unique_integer([:positive])
    {type, id} = ActorRef.parts!(actor)
    child(ctx, Native.context_send(token, type, id, message, tag), tag, {:send, [actor]})
  end

  @doc """
  Sends `message` to `actor` on behalf of this packet without waiting for
  its turn (see `PacketFlow.Actors.tell/4`): `:ok` once it holds its place
  in the actor's mailbox. A tell after the handler answered is PF503.

  Raises `ArgumentError` if `message` is not JSON-shaped.
  """
  @spec tell(t(), ActorRef.t(), PacketFlow.Actors.message()) ::
          :ok | {:error, PacketFlow.Error.t()}
  def tell(%__MODULE__{token: token}, %ActorRef{} = actor, message) do
    {type, id} = ActorRef.parts!(actor)

    case Native.context_tell(token, type, id, message) do
      {:badarg, message} -> raise ArgumentError, message
      told -> told
    end
  end

  # Waits for a child call or message started by a NIF.
  defp child(ctx, started, tag, {fun, args}) do
    case started do
      {:ok, answer} ->
        answer

      :pending ->
        wait = remaining_ms(ctx) + @grace_ms

        receive do
          {:pf_child, ^tag, answer} -> answer
        after
          wait -> exit({:timeout, {__MODULE__, fun, args}})
        end

      {:badarg, message} ->
        raise ArgumentError, message
    end
  end
end
