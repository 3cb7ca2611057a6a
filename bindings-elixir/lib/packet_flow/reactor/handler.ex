defmodule PacketFlow.Reactor.Handler do
  @moduledoc false
  # Runs one call inside a pool worker, a handler's or an actor's turn, and
  # sends the answer back through the NIF, which also puts the worker back
  # on the idle stack. Whatever the code does (return, raise, throw, exit),
  # exactly one answer is sent; if the worker dies instead, freeing the
  # call's token answers PF500.

  alias PacketFlow.{ActorRef, Context, Error, Native}

  @typedoc "What a registration runs: a handler function, or an actor type's module."
  @type code :: (PacketFlow.value(), Context.t() -> term()) | PacketFlow.Actor.code()

  @spec run(code(), term(), String.t(), map() | nil, reference()) :: :ok
  def run(fun, data, packet_id, metadata, token) when is_function(fun, 2) do
    ctx = %Context{packet_id: packet_id, metadata: metadata, token: token}
    guarded(token, :handler, fn -> fun.(data, ctx) end, &answer(token, &1))
  end

  # A turn: the input is {message_type, message, state, actor_type, actor_id}.
  def run({:actor, module, 3} = code, {type, message, state, _, _}, _packet_id, _metadata, token) do
    guarded(
      token,
      code,
      fn -> module.handle_message(type, message, state) end,
      &turn(token, code, &1)
    )
  end

  def run(
        {:actor, module, 4} = code,
        {type, message, state, actor_type, id},
        packet_id,
        metadata,
        token
      ) do
    actor = %ActorRef{type: actor_type, id: id}
    ctx = %Context{packet_id: packet_id, metadata: metadata, token: token, actor: actor}

    guarded(
      token,
      code,
      fn -> module.handle_message(type, message, ctx, state) end,
      &turn(token, code, &1)
    )
  end

  # Runs `body` and hands its value to `answer`; a raise, throw or exit
  # answers PF500 naming what happened (`who` ran the code).
  defp guarded(token, who, body, answer) do
    body.()
  rescue
    e -> Native.reply_failed(token, describe_exception(e), true)
  catch
    :throw, value ->
      Native.reply_failed(token, "#{describe(who)} threw #{inspect(value)}", true)

    :exit, reason ->
      Native.reply_failed(
        token,
        "#{describe(who)} exited: #{Exception.format_exit(reason)}",
        true
      )
  else
    value -> answer.(value)
  end

  defp answer(token, {:ok, value}), do: Native.reply_ok(token, value, true)

  defp answer(token, {:error, %Error{code: code, message: message}}),
    do: Native.reply_error(token, code, message, true)

  defp answer(token, {:error, reason}),
    do: Native.reply_failed(token, "handler returned an error: #{describe_reason(reason)}", true)

  defp answer(token, value), do: Native.reply_ok(token, value, true)

  defp turn(token, _code, {:reply, reply, state}),
    do: Native.reply_turn(token, reply, state, false, true)

  defp turn(token, _code, {:noreply, state}),
    do: Native.reply_turn(token, nil, state, false, true)

  defp turn(token, _code, {:stop, reply, _state}),
    do: Native.reply_turn(token, reply, nil, true, true)

  defp turn(token, code, other) do
    Native.reply_failed(
      token,
      "#{describe(code)} returned #{inspect(other, limit: 8, printable_limit: 80)}; expected " <>
        "{:reply, reply, state}, {:noreply, state} or {:stop, reply, state}",
      true
    )
  end

  defp describe(:handler), do: "handler"
  defp describe({:actor, module, arity}), do: "#{inspect(module)}.handle_message/#{arity}"

  defp describe_exception(%module{} = e) do
    "#{inspect(module)}: #{Exception.message(e)}"
  end

  defp describe_reason(reason) when is_binary(reason), do: reason
  defp describe_reason(reason), do: inspect(reason)
end
