defmodule PacketFlow.Reactor.Handler do
  @moduledoc false
  # Runs one handler call inside a pool worker and sends the answer back
  # through the NIF, which also puts the worker back on the idle stack.
  # Whatever the handler does (return, raise, throw, exit), exactly one
  # answer is sent; if the worker dies instead, freeing the call's token
  # answers PF500.

  alias PacketFlow.{Context, Error, Native}

  @spec run(function(), PacketFlow.value(), String.t(), map() | nil, reference()) :: :ok
  def run(fun, data, packet_id, metadata, token) do
    answer(fun, data, %Context{packet_id: packet_id, metadata: metadata, token: token})
  end

  defp answer(fun, data, %Context{token: token} = ctx) do
    fun.(data, ctx)
  rescue
    e -> Native.reply_failed(token, describe_exception(e), true)
  catch
    :throw, value ->
      Native.reply_failed(token, "handler threw #{inspect(value)}", true)

    :exit, reason ->
      Native.reply_failed(token, "handler exited: #{Exception.format_exit(reason)}", true)
  else
    {:ok, value} ->
      Native.reply_ok(token, value, true)

    {:error, %Error{code: code, message: message}} ->
      Native.reply_error(token, code, message, true)

    {:error, reason} ->
      Native.reply_failed(token, "handler returned an error: #{describe_reason(reason)}", true)

    value ->
      Native.reply_ok(token, value, true)
  end

  defp describe_exception(%module{} = e) do
    "#{inspect(module)}: #{Exception.message(e)}"
  end

  defp describe_reason(reason) when is_binary(reason), do: reason
  defp describe_reason(reason), do: inspect(reason)
end
