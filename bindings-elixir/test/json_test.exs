defmodule PacketFlow.JSONTest do
  use ExUnit.Case, async: true
  doctest PacketFlow.JSON

  alias PacketFlow.JSON

  test "round trips JSON-shaped values exactly" do
    value = %{
      "unicode" => "héllo 𝄞 日本",
      "ints" => [
        0,
        -1,
        9_007_199_254_740_993,
        -9_223_372_036_854_775_808,
        18_446_744_073_709_551_615
      ],
      "floats" => [0.5, -1.0e300, 1.0e-300],
      "deep" => Enum.reduce(1..100, "leaf", fn _, acc -> [acc] end),
      "empty" => [%{}, []],
      "flags" => [true, false, nil]
    }

    assert JSON.decode!(JSON.encode!(value)) == value
  end

  test "atom keys and atom values become strings" do
    assert JSON.encode!(%{a: :b}) == ~s({"a":"b"})
  end

  test "values with no JSON form raise, naming type and path" do
    assert {:error, %ArgumentError{message: message}} = JSON.encode(%{"items" => [1, {:tuple}]})
    assert message =~ "value.items[1] is a tuple"
    assert_raise ArgumentError, ~r/pid/, fn -> JSON.encode!([self()]) end
    assert_raise ArgumentError, ~r/UTF-8/, fn -> JSON.encode!(<<0xFF>>) end
  end

  test "invalid text is an error with where it stopped" do
    assert {:error, message} = JSON.decode(~s({"a": ))
    assert message =~ "line 1"
    assert_raise ArgumentError, ~r/invalid JSON/, fn -> JSON.decode!("nope") end
  end
end
