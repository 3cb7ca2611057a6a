defmodule PacketFlow.DocsTest do
  @moduledoc "The public API is documented and typed (what `mix docs` will show)."
  use ExUnit.Case, async: true

  @public [
    PacketFlow,
    PacketFlow.Reactor,
    PacketFlow.Context,
    PacketFlow.Actor,
    PacketFlow.Actors,
    PacketFlow.ActorRef,
    PacketFlow.Result,
    PacketFlow.Error
  ]

  test "every public module has a @moduledoc" do
    for mod <- @public do
      assert {:docs_v1, _, :elixir, _, %{"en" => text}, _, _} = Code.fetch_docs(mod),
             "#{inspect(mod)} has no @moduledoc"

      assert String.length(text) > 40
    end
  end

  test "every public function has a @doc and a @spec" do
    for mod <- @public do
      {:docs_v1, _, :elixir, _, _, _, docs} = Code.fetch_docs(mod)
      {:ok, specs} = Code.Typespec.fetch_specs(mod)
      specced = MapSet.new(specs, fn {name_arity, _} -> name_arity end)

      for {{:function, name, arity}, _, _, doc, _} <- docs, doc != :hidden do
        assert match?(%{"en" => _}, doc), "#{inspect(mod)}.#{name}/#{arity} has no @doc"
        # Functions with default arguments carry one @spec for the longest arity.
        assert Enum.any?(arity..(arity + 2), &MapSet.member?(specced, {name, &1})),
               "#{inspect(mod)}.#{name}/#{arity} has no @spec"
      end
    end
  end
end
