defmodule PacketFlow.StdlibTest do
  @moduledoc """
  The standard library (docs/stdlib.md) from Elixir: the `:stdlib` option of
  `Reactor.start_link/1` hosts the chosen elements; the core parses the
  patterns and runs the elements, and a user's handler of the same key
  always wins.
  """
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Error, Reactor}

  @upper_then_shout %{
    "steps" => [
      %{"group" => "df", "element" => "upper"},
      %{"group" => "df", "element" => "shout"}
    ],
    "input" => "hi"
  }

  defp reactor_with_steps!(opts) do
    r = start_reactor!(opts)
    :ok = Reactor.register(r, "df", "upper", fn text, _ctx -> String.upcase(text) end)
    :ok = Reactor.register(r, "df", "shout", fn text -> text <> "!" end)
    r
  end

  test "an enabled element runs its steps on Elixir handlers" do
    r = reactor_with_steps!(stdlib: "cf:*,df:*")

    assert {:ok, %{"value" => "HI!", "steps" => 2}} =
             Reactor.call(r, "cf", "seq", @upper_then_shout)

    items = %{"items" => ["a", "b"], "fn" => %{"group" => "df", "element" => "upper"}}
    assert {:ok, ["A", "B"]} = Reactor.call(r, "df", "transform", items)
    assert {:ok, 6} = Reactor.call(r, "df", "reduce", %{"items" => [1, 2, 3], "op" => "sum"})
  end

  test "an element not enabled is PF001" do
    for opts <- [[], [stdlib: ""], [stdlib: "df:*"]] do
      r = reactor_with_steps!(opts)

      assert {:error, %Error{code: "PF001", message: "no handler for cf:seq"}} =
               Reactor.call(r, "cf", "seq", @upper_then_shout),
             inspect(opts)
    end
  end

  test "a bad pattern is PF400 naming it; a value that is not a string is an ArgumentError" do
    error = assert_raise Error, fn -> Reactor.start_link(stdlib: "cf:sqe") end
    assert error.code == "PF400"

    assert String.starts_with?(
             error.message,
             ~s(stdlib[0] "cf:sqe": no standard element matches it)
           )

    error = assert_raise Error, fn -> Reactor.start_link(stdlib: "cf:*,zz:seq") end
    assert String.starts_with?(error.message, ~s(stdlib[1] "zz:seq": not a group))

    assert_raise ArgumentError, ~r/stdlib must be a string of patterns, got: \["cf:\*"\]/, fn ->
      Reactor.start_link(stdlib: ["cf:*"])
    end
  end

  test "a user's handler of the key wins until it goes" do
    r = reactor_with_steps!(stdlib: "cf:seq")
    :ok = Reactor.register(r, "cf", "seq", fn _data -> "the user's seq" end)
    assert {:ok, "the user's seq"} = Reactor.call(r, "cf", "seq", @upper_then_shout)
    assert Reactor.unregister(r, "cf", "seq")

    assert {:ok, %{"value" => "HI!", "steps" => 2}} =
             Reactor.call(r, "cf", "seq", @upper_then_shout)
  end

  test "co:gather cancels the slowest call: its handler gets the cancellation notice" do
    r = start_reactor!(stdlib: "co:*")
    test = self()

    :ok =
      Reactor.register(r, "df", "stall", fn _data, ctx ->
        id = ctx.packet_id
        send(test, {:stalling, id})

        receive do
          {:packetflow_cancelled, ^id} -> send(test, {:cancelled, id})
        after
          30_000 -> :ok
        end

        "never cancelled"
      end)

    :ok =
      Reactor.register(r, "df", "fast", fn _data ->
        # Answers once the test saw the stalling call run, so that it is
        # the one cancelled.
        send(test, {:fast, self()})
        receive do: (:go -> "fast"), after: (5_000 -> "fast, alone")
      end)

    calls = [%{"group" => "df", "element" => "stall"}, %{"group" => "df", "element" => "fast"}]

    gather =
      Task.async(fn -> Reactor.call(r, "co", "gather", %{"calls" => calls, "min" => 1}) end)

    assert_receive {:stalling, id}, 5_000
    assert_receive {:fast, fast}, 5_000
    send(fast, :go)

    assert {:ok, [%{"ok" => false, "cancelled" => true}, %{"ok" => true, "value" => "fast"}]} =
             Task.await(gather, 10_000)

    assert_receive {:cancelled, ^id}, 5_000
  end
end
