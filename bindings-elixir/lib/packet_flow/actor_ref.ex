defmodule PacketFlow.ActorRef do
  @moduledoc """
  The address of an actor: its type and its id.

  `PacketFlow.Actors.create/4` returns one; one can also be made by hand for
  an actor created elsewhere (another process, another node, another
  language), since an actor is nothing but these two names:

      counter = %PacketFlow.ActorRef{type: "counter", id: "c1"}

  The core checks both when a message is sent (an id is 1-128 bytes; a
  type is 1-58 characters of `[A-Za-z0-9_.-]`): a bad one is answered
  PF400 naming the part.
  """

  @enforce_keys [:type, :id]
  defstruct [:type, :id]

  @type t :: %__MODULE__{type: String.t(), id: String.t()}

  @doc false
  # The type and id as the NIFs take them; ArgumentError for a struct
  # whose fields are not strings (what strings are valid, the core says).
  @spec parts!(t()) :: {String.t(), String.t()}
  def parts!(%__MODULE__{type: type, id: id}) when is_binary(type) and is_binary(id),
    do: {type, id}

  def parts!(actor) do
    raise ArgumentError, "an actor's address has a string :type and :id, got: #{inspect(actor)}"
  end
end
