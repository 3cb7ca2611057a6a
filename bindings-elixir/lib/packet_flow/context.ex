defmodule PacketFlow.Context do
  @moduledoc """
  What a handler knows about the packet it serves, passed as its second
  argument (and to an actor's `handle_message/4`).

  `:packet_id` and `:metadata` are plain fields, and `:actor` is the
  address of the actor whose turn this is (`nil` in a handler);
  `remaining_ms/1`, `trace_id/1`, `priority/1`, `cancelled?/1`, `call/5`,
  `send/4` and `tell/4` ask the runtime. A context is only meaningful
  while its handler runs.

  ## Cancellation

  A packet can end while its handler still runs: cancelled
  (`PacketFlow.Reactor.cancel/2`, its submitting process gone, a peer's
  cancel, the packet that called it cancelled or ended), past its
  deadline, or its reactor stopping. Its submitter has its answer then
  (PF499, PF408, PF503), and whatever the handler returns later is
  dropped. The handler is told, in the process it runs in (a worker of
  the reactor's pool), by a message:

      {:packetflow_cancelled, packet_id}

  where `packet_id` is `ctx.packet_id`. Nothing is interrupted: the
  handler decides what to stop and when, as a process that receives a
  message does. A handler that waits can wait for the notice too:

      fn data, ctx ->
        id = ctx.packet_id
        job = start_export(data)

        receive do
          {:export_done, ^job, file} -> file
          {:packetflow_cancelled, ^id} -> abort_export(job)
        end
      end

  and one that loops over work can check `cancelled?/1` between steps
  (true once the notice was sent). A `call/5` or `send/4` the handler is
  waiting in ends by itself: the child packet is cancelled with its
  parent and the call returns `{:error, %PacketFlow.Error{code: "PF499"}}`.

  The notice is sent only while the worker runs that packet's handler, at
  most once, and before the worker can take its next call; a notice the
  handler did not receive is dropped before the next call starts. So a
  worker never sees a notice meant for an earlier call. An actor's
  `handle_message` is told the same way (see `PacketFlow.Actor`).

  Why a message and not an exit signal: an exit would kill the handler
  wherever it stands (halfway through a write, holding a resource other
  processes wait on) unless it traps exits, and a handler that traps
  exits would see its notice mixed with the exits of the processes it
  links to. A message is what a process is told things with; handlers
  that want to stop at once can `exit/1` themselves when they receive it.
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

  @doc "The packet's priority, 1-10 (10 most urgent), which its calls inherit."
  @spec priority(t()) :: 1..10
  def priority(%__MODULE__{token: token}), do: Native.context_priority(token)

  @doc """
  Whether the packet ended without this handler's answer (cancelled, past
  its deadline, its reactor stopping): `true` once this process was sent
  `{:packetflow_cancelled, packet_id}` (see "Cancellation" above). For a
  handler that works in steps to check between them.
  """
  @spec cancelled?(t()) :: boolean()
  def cancelled?(%__MODULE__{token: token}), do: Native.context_cancelled(token)

  @typedoc """
  Options of `call/5`, `send/4` and `tell/4`: `:priority`, the child's
  (1-10), instead of this packet's; `:timeout_ms`, the child's timeout
  (1-86400000) when shorter than what is left of this packet's deadline.
  `nil` leaves either as it would be without it.
  """
  @type call_option :: {:priority, 1..10 | nil} | {:timeout_ms, pos_integer() | nil}

  @doc """
  Calls another handler on behalf of this packet and waits for its data.

  The child packet inherits what is left of this packet's deadline (unless
  `opts` gives a shorter `timeout_ms:`), its priority (unless `opts` names
  one: `priority: 1..10`) and its trace id, so a chain of calls never
  outlives the first submit and runs at its priority. Waiting happens in the calling process (a receive), never in a
  NIF. Once the handler has answered, a call fails with PF503 (a child
  must not outlive its parent): make child calls before returning. When
  this packet is cancelled or ends while the call waits, the child is
  cancelled too and the call returns PF499.

  Raises `ArgumentError` if `data` is not JSON-shaped or an option is
  unknown; a bad priority or timeout is PF400 naming it.
  """
  @spec call(t(), PacketFlow.name(), PacketFlow.name(), PacketFlow.value(), [call_option()]) ::
          {:ok, PacketFlow.value()} | {:error, PacketFlow.Error.t()}
  def call(%__MODULE__{token: token} = ctx, group, element, data \\ nil, opts \\ []) do
    tag = System.unique_integer([:positive])
    group = PacketFlow.name!(group, "group")
    element = PacketFlow.name!(element, "element")

    {priority, timeout_ms} = child_options!(opts)

    child(
      ctx,
      Native.context_call(token, group, element, data, priority, timeout_ms, tag),
      tag,
      {:call, [group, element]}
    )
  end

  # The options of a child call, message or tell; their values are the
  # core's to judge.
  defp child_options!([]), do: {nil, nil}

  defp child_options!(opts) do
    opts = Keyword.validate!(opts, [:priority, :timeout_ms])
    {opts[:priority], opts[:timeout_ms]}
  end

  @doc """
  Sends `message` to `actor` on behalf of this packet and waits for the
  turn's reply, as `call/5` does for a handler (same deadline, priority,
  trace and cancellation, and the same options).

  From an actor's turn, the message carries the turn's reentrancy chain: a
  message that comes back to the waiting actor through it runs at once
  instead of waiting behind the turn (see `PacketFlow.Actor`).

  Raises `ArgumentError` if `message` is not JSON-shaped.
  """
  @spec send(t(), ActorRef.t(), PacketFlow.Actors.message(), [call_option()]) ::
          {:ok, PacketFlow.value()} | {:error, PacketFlow.Error.t()}
  def send(%__MODULE__{token: token} = ctx, %ActorRef{} = actor, message, opts \\ []) do
    tag = System.unique_integer([:positive])
    {type, id} = ActorRef.parts!(actor)
    {priority, timeout_ms} = child_options!(opts)
    started = Native.context_send(token, type, id, message, priority, timeout_ms, tag)
    child(ctx, started, tag, {:send, [actor]})
  end

  @doc """
  Sends `message` to `actor` on behalf of this packet without waiting for
  its turn (see `PacketFlow.Actors.tell/4`): `:ok` once it holds its place
  in the actor's mailbox, in the order of its priority (this packet's
  unless `opts` names one); `timeout_ms:` bounds how long it may wait
  there. A tell after the handler answered is PF503.

  Raises `ArgumentError` if `message` is not JSON-shaped or an option is
  unknown; a bad priority or timeout is PF400.
  """
  @spec tell(t(), ActorRef.t(), PacketFlow.Actors.message(), [call_option()]) ::
          :ok | {:error, PacketFlow.Error.t()}
  def tell(%__MODULE__{token: token}, %ActorRef{} = actor, message, opts \\ []) do
    {type, id} = ActorRef.parts!(actor)
    {priority, timeout_ms} = child_options!(opts)

    case Native.context_tell(token, type, id, message, priority, timeout_ms) do
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
