defmodule PacketFlow.JSON do
  @moduledoc """
  JSON text to and from Elixir terms, with the same rules as packet values.

  OTP 25 has no JSON module and PacketFlow takes no dependency, so this
  module offers the core's JSON codec (Rust's serde_json, through the
  NIF) for the JSON a service exchanges next to its packets: log lines,
  stdin/stdout protocols, fixtures.

      iex> PacketFlow.JSON.encode!(%{"name" => "Ada", "tags" => [1, 2.5, nil]})
      ~s({"name":"Ada","tags":[1,2.5,null]})

      iex> PacketFlow.JSON.decode!(~s({"ok": true, "n": 9007199254740993}))
      %{"ok" => true, "n" => 9007199254740993}

  Values follow `t:PacketFlow.value/0`: maps with string or atom keys,
  lists, UTF-8 binaries, integers (within 64 bits), floats, booleans and
  `nil`; other atoms become strings. Decoded objects are maps with string
  keys (key order is not kept, as in any Elixir map). Both directions run
  on a dirty CPU scheduler, so a large document does not hold up a normal
  one.
  """

  alias PacketFlow.Native

  @doc """
  Encodes `value` as compact JSON text: `{:ok, text}`, or
  `{:error, %ArgumentError{}}` naming the first part that has no JSON form
  and where it is (`value.items[2] is a tuple, ...`).
  """
  @spec encode(PacketFlow.value()) :: {:ok, String.t()} | {:error, Exception.t()}
  def encode(value) do
    case Native.json_encode(value) do
      {:ok, text} -> {:ok, text}
      {:badarg, message} -> {:error, ArgumentError.exception(message)}
    end
  end

  @doc "Like `encode/1`, returning the text or raising `ArgumentError`."
  @spec encode!(PacketFlow.value()) :: String.t()
  def encode!(value) do
    case encode(value) do
      {:ok, text} -> text
      {:error, error} -> raise error
    end
  end

  @doc """
  Decodes one JSON document: `{:ok, term}`, or `{:error, message}` with the
  line and column where the text stops being JSON.
  """
  @spec decode(binary()) :: {:ok, PacketFlow.value()} | {:error, String.t()}
  def decode(text) when is_binary(text), do: Native.json_decode(text)

  @doc "Like `decode/1`, returning the term or raising `ArgumentError`."
  @spec decode!(binary()) :: PacketFlow.value()
  def decode!(text) when is_binary(text) do
    case decode(text) do
      {:ok, term} -> term
      {:error, message} -> raise ArgumentError, message
    end
  end
end
