defmodule PacketFlow.Reactor.Handler do
  @moduledoc false
  # Runs one handler call inside its Task and sends the answer back through
  # the NIF. Whatever the handler does (return, raise, throw, exit), exactly
  # one answer is sent.

  alias PacketFlow.{Context, Error, Native}

  @spec run(function(), PacketFlow.value(), String.t(), map() | nil, reference(), pid()) :: true
  def run(fun, data, packet_id, metadata, token, dispatcher) do
    answer(fun, data, %Context{packet_id: packet_id, metadata: metadata, token: token})
    # Answered: leave the dispatcher's watch before ending, which spares it
    # one exit message per call. Until here, a task that dies unanswered
    # still reaches it as an exit signal.
    Process.unlink(dispatcher)
  end

  defp answer(fun, data, %Context{token: token} = ctx) do
    fun.(data, ctx)
  rescue
    e -> Native.reply_failed(token, describe_exception(e))
  catch
    :throw, value ->
      Native.reply_failed(token, "handler threw #{inspect(value)}")

    :exit, reason ->
      Native.reply_failed(token, "handler exited: #{Exception.format_exit(reason)}")
  else
    {:ok, value} ->
      Native.reply_ok(token, value)

    {:error, %Error{code: code, message: message}} ->
      Native.reply_error(token, code, message)

    {:error, reason} ->
      Native.reply_failed(token, "handler returned an error: #{describe_reason(reason)}")

    value ->
      Native.reply_ok(token, value)
  end

  defp describe_exception(%module{} = e) do
    "#{inspect(module)}: #{Exception.message(e)}"
  end

  defp describe_reason(reason) when is_binary(reason), do: reason
  defp describe_reason(reason), do: inspect(reason)
end
