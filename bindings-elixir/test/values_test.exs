defmodule PacketFlow.ValuesTest do
  @moduledoc "How Elixir terms cross to JSON values and back."
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Context, Error, Reactor, Result}

  setup do
    r = start_reactor!()
    :ok = Reactor.register(r, "df", "echo", fn d, _ -> d end)
    %{r: r}
  end

  test "JSON-shaped values round-trip", %{r: r} do
    values = [
      nil,
      true,
      false,
      0,
      -1,
      9_223_372_036_854_775_807,
      -9_223_372_036_854_775_808,
      18_446_744_073_709_551_615,
      1.5,
      -0.0,
      1.0e300,
      "",
      "héllo ✓",
      [],
      [1, "two", [3.0, nil]],
      %{},
      %{"a" => %{"b" => [%{"c" => true}]}},
      String.duplicate("x", 100_000),
      Enum.to_list(1..1000)
    ]

    for v <- values do
      assert {:ok, ^v} = Reactor.call(r, "df", "echo", v)
    end
  end

  test "atoms cross as strings, atom keys as string keys", %{r: r} do
    assert {:ok, %{"status" => "ready", "nested" => %{"k" => ["a", nil]}}} =
             Reactor.call(r, "df", "echo", %{status: :ready, nested: %{k: [:a, nil]}})

    assert {:ok, "Elixir.String"} = Reactor.call(r, "df", "echo", String)
  end

  test "the handler sees the same values", %{r: r} do
    :ok = Reactor.register(r, "df", "types", fn d -> Enum.map(d, &type_of/1) end)

    assert {:ok, ["integer", "float", "binary", "boolean", "nil", "list", "map"]} =
             Reactor.call(r, "df", "types", [1, 2.0, "s", true, nil, [], %{}])
  end

  defp type_of(v) when is_integer(v), do: "integer"
  defp type_of(v) when is_float(v), do: "float"
  defp type_of(v) when is_binary(v), do: "binary"
  defp type_of(v) when is_boolean(v), do: "boolean"
  defp type_of(nil), do: "nil"
  defp type_of(v) when is_list(v), do: "list"
  defp type_of(v) when is_map(v), do: "map"

  test "values that are not JSON raise ArgumentError naming type and path", %{r: r} do
    cases = [
      {{1, 2}, "data is a tuple"},
      {%{items: [1, {2}]}, "data.items[1] is a tuple"},
      {[self()], "data[0] is a pid"},
      {%{"ref" => make_ref()}, "data.ref is a reference"},
      {%{"f" => fn -> 1 end}, "data.f is a function"},
      {%{"a b" => [Port.list() |> hd()]}, ~s(data["a b"][0] is a port)},
      {<<255, 0>>, "data is a binary that is not valid UTF-8"},
      {%{"bits" => <<1::3>>}, "data.bits is a bitstring"},
      {[1 | 2], "data is an improper list"},
      {18_446_744_073_709_551_616, "data is an integer outside the 64-bit range"},
      {%{1 => "one"}, "data has a map key of type integer"},
      {%{:a => 1, "a" => 2}, ~s(data has the key "a" twice)},
      {deep(200), "is nested deeper than 128 levels"}
    ]

    for {value, text} <- cases do
      error = assert_raise ArgumentError, fn -> Reactor.call(r, "df", "echo", value) end
      assert error.message =~ text, "#{inspect(value, limit: 5)}: #{error.message}"
    end

    # The reactor is unaffected.
    assert {:ok, 1} = Reactor.call(r, "df", "echo", 1)
  end

  defp deep(0), do: []
  defp deep(n), do: [deep(n - 1)]

  test "what cannot be a packet's parts raises ArgumentError", %{r: r} do
    assert_raise ArgumentError, ~r/metadata.when is a tuple/, fn ->
      Reactor.submit(r, %{group: "df", element: "echo", metadata: %{when: {2024, 1, 1}}})
    end

    assert_raise ArgumentError, ~r/unknown packet field :colour/, fn ->
      Reactor.submit(r, %{group: "df", element: "echo", colour: "blue"})
    end

    assert_raise ArgumentError, ~r/packet fields are atoms/, fn ->
      Reactor.submit(r, %{"group" => "df", "element" => "echo"})
    end

    assert_raise ArgumentError, ~r/a packet must be a map/, fn -> Reactor.submit(r, "df:echo") end
  end

  test "fields of the wrong kind are the core's PF400, in the wire decoder's words", %{r: r} do
    cases = [
      {%{metadata: [1]}, "metadata must be an object, got an array"},
      {%{priority: "high"}, ~s(priority must be an integer 1-10, got "high")},
      {%{priority: 1.5}, "priority must be an integer 1-10, got 1.5"},
      {%{timeout_ms: -1}, "timeout_ms must be a positive integer <= 86400000, got -1"},
      {%{dependencies: ["a", 2]}, "dependencies[1] must be a packet id string, got 2"},
      {%{dependencies: ["a", ""]},
       "dependencies[1] must be a string of 1-128 bytes, got 0 bytes"},
      {%{dependencies: ["a", [1]]}, "dependencies[1] must be a packet id string, got an array"},
      {%{dependencies: ["a", {:b}]}, "dependencies[1] must be a packet id string, got a tuple"},
      {%{dependencies: "a"}, ~s(dependencies must be an array of packet ids, got "a")},
      {%{group: nil}, "group must be one of cf, df, ed, co, mc, rm, got null"},
      {%{group: {:df}}, "group must be one of cf, df, ed, co, mc, rm, got a tuple"},
      {%{element: self()}, "element must be 1-64 characters of [A-Za-z0-9_.-], got a pid"},
      {%{element: <<255>>}, "element must be 1-64 characters of [A-Za-z0-9_.-], got binary data"},
      {%{id: true}, "id must be a string of 1-128 bytes, got true"},
      {%{id: %{}}, "id must be a string of 1-128 bytes, got an object"},
      {%{id: [1 | 2]}, "id must be a string of 1-128 bytes, got an improper list"}
    ]

    for {fields, text} <- cases do
      packet = Map.merge(%{group: "df", element: "echo"}, fields)

      assert {:ok, %Result{status: :error, error: %Error{code: "PF400", message: ^text}}} =
               Reactor.submit(r, packet)
    end

    assert {:ok, %Result{error: %Error{code: "PF400", message: "group is required"}}} =
             Reactor.submit(r, %{element: "echo"})

    # A refused packet's result carries the id it was given.
    assert {:ok, %Result{packet_id: "mine", error: %Error{code: "PF400"}}} =
             Reactor.submit(r, %{id: "mine", group: "df", element: "echo", priority: 0})
  end

  test "a handler result that cannot cross is PF500 naming type and path", %{r: r} do
    :ok = Reactor.register(r, "df", "leak", fn _ -> %{"owner" => self()} end)
    assert {:error, %Error{code: "PF500", message: message}} = Reactor.call(r, "df", "leak")
    assert message =~ "the handler's result.owner is a pid"
  end

  test "a child call with bad data raises in the handler (PF500 for the parent)", %{r: r} do
    :ok =
      Reactor.register(r, "df", "parent", fn _, ctx ->
        Context.call(ctx, "df", "echo", {:tuple})
      end)

    assert {:error, %Error{code: "PF500", message: "ArgumentError: data is a tuple" <> _}} =
             Reactor.call(r, "df", "parent")
  end
end
