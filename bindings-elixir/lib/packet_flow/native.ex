defmodule PacketFlow.Native do
  @moduledoc false
  # The NIF library built from native/packetflow_nif. Every function here is
  # replaced by its native implementation when the module loads; none of
  # them blocks a scheduler (long work runs on the library's own threads and
  # answers with a message).

  @on_load :load_nif

  @doc false
  def load_nif do
    path = :filename.join(:code.priv_dir(:packetflow), ~c"native/libpacketflow_nif")

    case :erlang.load_nif(path, 0) do
      :ok ->
        :ok

      {:error, {:reload, _}} ->
        :ok

      {:error, reason} ->
        IO.warn("PacketFlow cannot load its native library #{path}.so: #{inspect(reason)}", [])
        {:error, reason}
    end
  end

  defp not_loaded, do: :erlang.nif_error(:nif_not_loaded)

  def reactor_check_config(_settings), do: not_loaded()
  def reactor_new(_settings, _actor_store, _pool), do: not_loaded()
  def reactor_register(_reactor, _group, _element, _handler_id), do: not_loaded()
  def reactor_unregister(_reactor, _group, _element), do: not_loaded()
  def reactor_submit(_reactor_pid, _fields, _tag, _submitter), do: not_loaded()
  def submitter_new, do: not_loaded()
  def reactor_cancel(_reactor_pid, _packet_id), do: not_loaded()
  def reactor_stop(_reactor), do: not_loaded()
  def reactor_stats(_reactor), do: not_loaded()
  def reactor_listen(_reactor, _addr, _options, _tag), do: not_loaded()
  def reactor_connect(_reactor, _url, _options, _tag), do: not_loaded()
  def error_codes, do: not_loaded()
  def json_encode(_term), do: not_loaded()
  def json_decode(_text), do: not_loaded()
  def reply_ok(_token, _value, _idle), do: not_loaded()
  def reply_failed(_token, _message, _idle), do: not_loaded()
  def reply_error(_token, _code, _message, _idle), do: not_loaded()
  def pool_new, do: not_loaded()
  def pool_trim(_pool), do: not_loaded()
  def pool_route(_pool), do: not_loaded()
  def pool_forget(_pool, _worker), do: not_loaded()
  def pool_idle(_pool), do: not_loaded()
  def invocation_bind(_token), do: not_loaded()
  def context_remaining_ms(_token), do: not_loaded()
  def context_trace_id(_token), do: not_loaded()
  def context_priority(_token), do: not_loaded()
  def context_cancelled(_token), do: not_loaded()

  def context_call(_token, _group, _element, _data, _priority, _timeout_ms, _tag),
    do: not_loaded()

  def context_send(_token, _type, _id, _message, _priority, _timeout_ms, _tag), do: not_loaded()
  def context_tell(_token, _type, _id, _message, _priority, _timeout_ms), do: not_loaded()
  def actor_register(_reactor, _type, _handler_id, _initial, _message_types), do: not_loaded()
  def actor_submit(_reactor_pid, _op, _type, _id, _fields, _tag, _submitter), do: not_loaded()
  def actor_tell(_reactor_pid, _type, _id, _fields), do: not_loaded()
  def actor_query(_reactor_pid, _what, _type, _tag), do: not_loaded()
  def reply_turn(_token, _reply, _state, _stop, _idle), do: not_loaded()
  def live_reactors, do: not_loaded()
  def live_invocations, do: not_loaded()

  # Test probes: the executor and the pool driven alone (test/layers_test.exs).
  def probe_home, do: not_loaded()
  def probe_home_run(_home), do: not_loaded()
  def probe_job(_home, _tag), do: not_loaded()
  def probe_job_woken_while_polled(_home, _value), do: not_loaded()
  def probe_fire(_triggers, _value), do: not_loaded()
  def probe_fire_later(_triggers, _value), do: not_loaded()
  def probe_pool_route(_pool, _terms), do: not_loaded()
  def probe_pool_push(_pool), do: not_loaded()
end
