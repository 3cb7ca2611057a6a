defmodule PacketFlow.SecurityTest do
  @moduledoc """
  listen/connect with tokens and TLS: the options reach the core, and its
  refusals (PF401, PF403, PF400, TLS failures) come back as error tuples.
  """
  use ExUnit.Case, async: true
  import PacketFlow.TestHelpers

  alias PacketFlow.{Error, Reactor, Result}

  @client_token "client-token-0123456789"
  @upper_only_token "upper-only-token-0123456789"
  @other_token "not-a-known-token-0123456789"
  # A map and a keyword list: both are accepted.
  @tokens [
    %{name: "client", token: @client_token, submit: ["df:*"]},
    [name: "upper-only", token: @upper_only_token, submit: ["df:upper"]]
  ]

  defp serving_reactor!(opts \\ []) do
    r = start_reactor!(opts)
    :ok = Reactor.register(r, "df", "upper", fn data -> String.upcase(data) end)
    :ok = Reactor.register(r, "df", "secret", fn _ -> "the secret" end)
    r
  end

  # Waits (bounded) until a submit to group:element is answered PF001. A
  # refused connection lingers until the node closes it, and a submit racing
  # that close may be sent there and answered PF503.
  defp no_route_to!(client, group, element, tries \\ 500)

  defp no_route_to!(_client, group, element, 0),
    do: flunk("#{group}:#{element} stayed routed to a peer")

  defp no_route_to!(client, group, element, tries) do
    case Reactor.call(client, group, element, nil, timeout_ms: 1_000) do
      {:error, %Error{code: "PF001"}} ->
        :ok

      {:error, %Error{code: "PF503"}} ->
        receive do
        after
          10 -> no_route_to!(client, group, element, tries - 1)
        end
    end
  end

  test "a listener with tokens lets in the right token and refuses a wrong or missing one with PF401" do
    server = serving_reactor!()
    {:ok, %{url: url}} = Reactor.listen(server, "127.0.0.1:0", tokens: @tokens)
    assert url =~ ~r{^ws://127\.0\.0\.1:\d+/packetflow/v1$}

    client = start_reactor!()
    assert :ok = Reactor.connect(client, url, token: @client_token)
    assert {:ok, "LET IN"} = Reactor.call(client, "df", "upper", "let in")
    assert {:ok, "the secret"} = Reactor.call(client, "df", "secret")

    for opts <- [[token: @other_token], []] do
      refused = start_reactor!()

      assert {:error, %Error{code: "PF401", message: message}} =
               Reactor.connect(refused, url, opts)

      assert message =~ "refused"
      refute message =~ @other_token
      no_route_to!(refused, "df", "upper")
    end
  end

  test "a token without the permission for a key gets PF403 on submit" do
    server = serving_reactor!()
    {:ok, %{url: url}} = Reactor.listen(server, "127.0.0.1:0", tokens: @tokens)
    client = start_reactor!()
    :ok = Reactor.connect(client, url, token: @upper_only_token, msgpack: true)

    assert {:ok, "ALLOWED"} = Reactor.call(client, "df", "upper", "allowed")

    assert {:ok, %Result{status: :error, error: %Error{code: "PF403", message: message}}} =
             Reactor.submit(client, group: "df", element: "secret")

    assert message =~ "upper-only" and message =~ "df:secret"
    assert {:error, %Error{code: "PF403"}} = Reactor.call(client, "df", "secret")
    # The connection stays usable.
    assert {:ok, "STILL"} = Reactor.call(client, "df", "upper", "still")
  end

  test "tokens from a file and inline add up; a token by its SHA-256; bad files and tokens are PF400" do
    dir = temp_dir!()
    file = Path.join(dir, "tokens.toml")

    File.write!(file, """
    [[tokens]]
    name = "from-file"
    token = "from-the-file-0123456789"
    submit = ["*"]
    """)

    digest = :crypto.hash(:sha256, @upper_only_token) |> Base.encode16(case: :lower)
    hashed = %{name: "hashed", token_sha256: digest, submit: ["df:upper"]}
    server = serving_reactor!()
    # A charlist path works too.
    {:ok, %{url: url}} =
      Reactor.listen(server, "127.0.0.1:0", auth_file: String.to_charlist(file), tokens: [hashed])

    for token <- ["from-the-file-0123456789", @upper_only_token] do
      client = start_reactor!()
      assert :ok = Reactor.connect(client, url, token: token)
      assert {:ok, "F"} = Reactor.call(client, "df", "upper", "f")
    end

    assert {:error, %Error{code: "PF401"}} = Reactor.connect(start_reactor!(), url, token: digest)

    r = start_reactor!()

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.listen(r, "127.0.0.1:0", auth_file: Path.join(dir, "missing.toml"))

    assert message =~ ~r/cannot read tokens file .*missing\.toml/

    typo = Path.join(dir, "typo.json")

    File.write!(
      typo,
      ~s({"tokens": [{"name": "t", "token": "0123456789abcdefgh", "sumbit": ["*"]}]})
    )

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.listen(r, "127.0.0.1:0", auth_file: typo)

    assert message =~ ~s(typo.json: tokens[0]: unknown field "sumbit")

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.listen(r, "127.0.0.1:0", tokens: [[name: "short", token: "tiny"]])

    assert message =~ "at least 16 bytes"
    refute message =~ "tiny"

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.listen(r, "127.0.0.1:0", tokens: [%{name: "none"}])

    assert message =~ "exactly one of token and token_sha256"

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.listen(r, "127.0.0.1:0",
               tokens: [%{name: "p", token: @client_token, serve: ["zz:x"]}]
             )

    assert message =~ "serve"

    # A token that cannot travel in an HTTP header.
    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.connect(r, "ws://127.0.0.1:1/packetflow/v1", token: "has a\nnewline")

    assert message =~ "visible ASCII"
    assert Process.alive?(r)
  end

  test "options of the wrong shape raise ArgumentError naming them" do
    r = start_reactor!()
    url = "ws://127.0.0.1:1/packetflow/v1"

    cases = [
      {[auth_file: 5], ~r/^auth_file must be a path, got: 5 \(for 127\.0\.0\.1:0\)$/},
      {[tls_cert: :cert], ~r/^tls_cert must be a path, got: :cert/},
      {[tls_key: [1.5]], ~r/^tls_key must be a path, got: \[1\.5\]/},
      {[tls: true], ~r/^unknown listen options \[:tls\]/},
      {[:auth_file], ~r/^listen options must be a keyword list/}
    ]

    for {opts, message} <- cases do
      assert_raise ArgumentError, message, fn -> Reactor.listen(r, "127.0.0.1:0", opts) end
    end

    # Token entries are the core's to judge, as a tokens file's are.
    token_cases = [
      {"abc", "tokens must be a list of token maps, got a string"},
      {%{name: "x"}, "tokens must be a list of token maps, got a map"},
      {["x"],
       "tokens[0] must be a map (name, token or token_sha256, submit, serve, dashboard), got a string"},
      {[[1, 2]],
       "tokens[0] must be a map (name, token or token_sha256, submit, serve, dashboard), got an array"},
      {[%{token: @client_token}], "tokens[0].name is missing"},
      {[%{name: "a", sumbit: []}],
       ~s(tokens[0]: unknown field "sumbit"; expected name, token or token_sha256, submit, serve, dashboard)},
      {[%{name: 1}], "tokens[0].name must be a string, got 1"},
      {[%{name: "a", token: 12_345}], "tokens[0].token must be a string, got a number"},
      {[%{name: "a", submit: "df:*"}],
       ~s(tokens[0].submit must be an array of patterns, got "df:*")},
      {[%{name: "a", serve: ["df:*", 7]}], "tokens[0].serve must hold strings, got 7"},
      {[[name: "a", token: ~c"secret-as-charlist"]],
       "tokens[0].token must be a string, got an array"},
      {[%{name: "a", token: {:secret}}], "tokens[0].token is a tuple"}
    ]

    for {tokens, text} <- token_cases do
      assert {:error, %Error{code: "PF400", message: message}} =
               Reactor.listen(r, "127.0.0.1:0", tokens: tokens)

      assert String.starts_with?(message, text), "#{inspect(tokens)}: #{message}"
      refute message =~ "secret"
    end

    # A token's value never shows, even when it has the wrong type.
    error =
      assert_raise ArgumentError, fn -> Reactor.connect(r, url, token: ~c"secret-as-charlist") end

    assert error.message =~ "token must be a string, got a list"
    refute error.message =~ "secret"

    assert_raise ArgumentError, ~r/^tls_ca must be a path, got: 3/, fn ->
      Reactor.connect(r, url, tls_ca: 3)
    end

    assert_raise ArgumentError, ~r/^unknown connect options \[:tlsCa\]/, fn ->
      Reactor.connect(r, url, tlsCa: "ca.pem")
    end

    # The same checks apply to the start options.
    assert_raise ArgumentError, ~r/^unknown listen options \[:cert\]/, fn ->
      Reactor.start_link(listen: {"127.0.0.1:0", cert: "x"})
    end

    assert_raise ArgumentError,
                 ~r/^listen must be an address string or \{address, listen_options\}/,
                 fn ->
                   Reactor.start_link(listen: {"127.0.0.1:0", "x"})
                 end

    assert_raise ArgumentError, ~r/^token must be a string, got an integer/, fn ->
      Reactor.start_link(connect: [{url, token: 1}])
    end

    assert Process.alive?(r)
  end

  test "wss://: a listener with a certificate, a client trusting its CA, a round trip both ways" do
    tls = make_tls!(temp_dir!())
    server = serving_reactor!()

    {:ok, %{url: url, port: port}} =
      Reactor.listen(server, "127.0.0.1:0", tls_cert: tls.cert, tls_key: tls.key)

    assert url == "wss://127.0.0.1:#{port}/packetflow/v1"

    client = start_reactor!()
    :ok = Reactor.register(client, "cf", "back", fn data -> %{"back" => data} end)
    assert :ok = Reactor.connect(client, url, tls_ca: tls.ca)
    assert {:ok, "ENCRYPTED"} = Reactor.call(client, "df", "upper", "encrypted")
    assert {:ok, %{"back" => [1, "two"]}} = Reactor.call(server, "cf", "back", [1, "two"])

    # MessagePack over TLS, dialled by name (the certificate names localhost too).
    packed = start_reactor!()
    local_url = "wss://localhost:#{port}/packetflow/v1"
    assert :ok = Reactor.connect(packed, local_url, tls_ca: tls.ca, msgpack: true)
    assert {:ok, "PACKED"} = Reactor.call(packed, "df", "upper", "packed")
  end

  test "wss:// with tokens, as start options too; TLS failures are errors with the reason" do
    dir = temp_dir!()
    tls = make_tls!(dir)
    other = make_tls!(dir, "other")
    server = serving_reactor!()

    {:ok, %{url: url, port: port}} =
      Reactor.listen(server, "127.0.0.1:0", tokens: @tokens, tls_cert: tls.cert, tls_key: tls.key)

    client = start_reactor!()
    assert {:error, %Error{code: "PF401"}} = Reactor.connect(client, url, tls_ca: tls.ca)

    assert {:error, %Error{code: "PF503", message: message}} =
             Reactor.connect(client, url, tls_ca: other.ca, token: @client_token)

    assert message =~ ~r/TLS handshake failed.*UnknownIssuer/

    assert {:error, %Error{}} =
             Reactor.connect(client, "ws://127.0.0.1:#{port}/packetflow/v1", token: @client_token)

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.connect(client, url, tls_ca: Path.join(dir, "nope.pem"))

    assert message =~ "CA file"

    # Start options: a TLS listener of its own, and the dial with token and CA.
    spoke =
      start_reactor!(
        listen: {"127.0.0.1:0", tls_cert: tls.cert, tls_key: tls.key, tokens: @tokens},
        connect: [{url, token: @client_token, tls_ca: tls.ca}]
      )

    assert {:ok, "AT START"} = Reactor.call(spoke, "df", "upper", "at start")

    # A bad start option stops the start with the core's error.
    Process.flag(:trap_exit, true)

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.start_link(listen: {"127.0.0.1:0", tls_cert: tls.cert})

    assert message =~ "both a certificate and a key"

    assert {:error, %Error{code: "PF401"}} =
             Reactor.start_link(connect: [{url, token: @other_token, tls_ca: tls.ca}])
  end

  test "bad TLS files for a listener are PF400 naming them" do
    dir = temp_dir!()
    tls = make_tls!(dir)
    r = start_reactor!()

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.listen(r, "127.0.0.1:0",
               tls_cert: Path.join(dir, "none.crt"),
               tls_key: tls.key
             )

    assert message =~ "cannot read TLS certificate"

    not_pem = Path.join(dir, "plain.txt")
    File.write!(not_pem, "not a certificate\n")

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.listen(r, "127.0.0.1:0", tls_cert: not_pem, tls_key: tls.key)

    assert message =~ ~r/TLS certificate .*plain\.txt/

    assert {:error, %Error{code: "PF400", message: message}} =
             Reactor.listen(r, "127.0.0.1:0", tls_cert: tls.cert, tls_key: not_pem)

    assert message =~ "TLS key"
  end
end
