defmodule PacketFlow.Reactor do
  @moduledoc """
  A PacketFlow reactor: a GenServer owning one native reactor, its handler
  table and the processes its handlers run in.

  Start it under a supervisor:

      children = [
        {PacketFlow.Reactor, name: MyApp.Reactor, max_inflight: 256}
      ]

  or directly with `start_link/1`. Then `register/4` handlers and `submit/2`
  or `call/5` packets, from any process.

  ## How work flows

  * `submit/2` and `call/5` run in the calling process: a NIF converts
    the packet and hands it to the native reactor (found by the
    GenServer's pid, without a message to it), and the result arrives as a
    message to the caller, which waits for it with a `receive`. The
    GenServer only registers handlers, joins the network and owns the
    native reactor; it is never on a packet's path. A caller that dies
    while waiting cancels its packet (see `cancel/2`) and leaks nothing.
  * Handlers run in a pool of long-lived worker processes, linked to the
    reactor's dispatcher (which traps their exits). Each handler call goes
    to an idle worker, never to a busy one, so a slow or blocked handler
    delays no other call: when every worker is busy, another is started.
    The handler's answer goes back through a NIF. A handler that raises,
    throws or exits answers PF500 with its message; a worker that is
    killed answers PF500 too. Neither affects the reactor, and the pool
    replaces the worker when it needs one. Before its next call a worker
    clears what a handler left behind: its process dictionary (Logger
    metadata included), the `:trap_exit` flag, and stray messages. A
    worker that stays idle for 10-20 seconds ends.
  * Stopping the reactor (`stop/1`, or its supervisor shutting down) stops
    the native reactor: packets still in flight are answered PF503, handler
    workers are shut down, and the native resources are freed.


  ## On the network

  A reactor joins other PacketFlow nodes (any language, or the
  `packetflow serve` hub) over WebSocket: `listen/3` accepts peers,
  `connect/3` dials one, or both at start:

      {PacketFlow.Reactor,
       name: MyApp.Reactor,
       listen: "127.0.0.1:8443",
       connect: ["ws://hub.internal:8443/packetflow/v1"]}

  A submit with no local handler goes to a peer that announced one; the
  reactor's own handlers serve submits from its peers. Connections are
  owned by the native node: a lost connection is redialled with backoff
  until the reactor stops, and stopping the reactor closes them (packets in
  flight are answered PF503 first).

  A listener can require a token from every peer and speak `wss://`; a
  dialer presents its token and trusts a CA file (see `t:listen_option/0`
  and `t:connect_option/0`):

      {PacketFlow.Reactor,
       name: MyApp.Hub,
       listen:
         {"0.0.0.0:8443",
          auth_file: "/etc/packetflow/tokens.toml",
          tls_cert: "/etc/packetflow/node.crt",
          tls_key: "/etc/packetflow/node.key"}}

      {PacketFlow.Reactor,
       name: MyApp.Billing,
       connect: [
         {"wss://hub.internal:8443/packetflow/v1",
          token: System.fetch_env!("PACKETFLOW_TOKEN"), tls_ca: "/etc/packetflow/ca.pem"}
       ]}

  A refused token is `{:error, %PacketFlow.Error{code: "PF401"}}` from
  `connect/3` (or from `start_link/1`); a submit outside what the token
  allows is answered PF403.

  ## On NATS

  The same `connect/3` (or `:connect` option) with a `nats://HOST:PORT` or
  `tls://` URL (several servers separated by commas) joins a NATS system:
  the reactor's handlers are served to every node on it, and a submit
  with no local handler and no WebSocket peer for it goes over NATS. The
  NATS options are in `t:connect_option/0`; `stats/1` shows the
  connection under `:nats`:

      {PacketFlow.Reactor,
       name: MyApp.Reactor,
       connect: [
         {"nats://nats-1.internal:4222,nats://nats-2.internal:4222",
          namespace: "orders", credentials_file: "/etc/packetflow/app.creds"}
       ]}
  """

  use GenServer

  alias PacketFlow.{Native, Result}
  alias PacketFlow.Reactor.Dispatcher

  @typedoc "A running reactor: its pid or registered name."
  @type t :: GenServer.server()

  @typedoc """
  A handler: called with the packet's data and a `PacketFlow.Context` (or
  with the data alone), it returns the result's data. It may also return
  `{:ok, data}`, `{:error, %PacketFlow.Error{}}` (that error, code included)
  or `{:error, reason}` (PF500).
  """
  @type handler ::
          (PacketFlow.value(), PacketFlow.Context.t() -> term()) | (PacketFlow.value() -> term())

  @typedoc """
  A packet to submit, as a map or keyword list. `:group` and `:element` are
  required; `:data` defaults to `nil`, `:priority` (1-10, 10 most urgent)
  to 5, `:timeout_ms` to 30 000, `:id` to a fresh UUID.
  """
  @type packet ::
          %{
            required(:group) => PacketFlow.name(),
            required(:element) => PacketFlow.name(),
            optional(:data) => PacketFlow.value(),
            optional(:id) => String.t(),
            optional(:priority) => 1..10,
            optional(:timeout_ms) => pos_integer(),
            optional(:dependencies) => [String.t()],
            optional(:metadata) => %{optional(String.t() | atom()) => PacketFlow.value()}
          }
          | keyword()

  @typedoc """
  Options of `start_link/1`:

  * `:name` - registers the reactor process (any `GenServer` name); an atom
    name also names the reactor in its stats.
  * `:reactor_name` - the name shown in stats (default: from `:name`, else
    the core's default, `"packetflow"`).
  * `:max_inflight` - most handlers running at once (the core's default:
    1024); more packets wait in a priority queue.
  * `:max_queue` - most packets waiting (the core's default: 65 536); past
    it, submits are answered PF429.
  * `:listen` - an address to accept peers on (`"127.0.0.1:8443"`; port 0
    picks a free one), or `{address, listen_options}` (see
    `t:listen_option/0`), as with `listen/3` before `start_link/1` returns.
  * `:connect` - peers to dial before `start_link/1` returns: a URL, or a
    list of URLs and `{url, connect_options}` pairs (see `connect/3`).
  * `:actor_store` - a file for the state of this reactor's actors (see
    `PacketFlow.Actors`), made if missing: a [redb](https://www.redb.org)
    database written before each turn's reply leaves, so an acknowledged
    message survives a crash of the VM. One reactor holds a file at a time
    (another, in this VM or another process, is refused with PF400); the
    file is closed when the reactor stops, so a supervisor may restart it
    at once. Default: in memory, for as long as the reactor runs.
  * `:actor_passivate_after_ms` - how long an actor stays in memory
    without a message before it leaves for its store, to come back on its
    next message (the core's default: 10 minutes).
  * `:actor_remembered_turns` - how many of its recent turns each actor
    remembers, so that a message repeated with the same id is answered
    without running again (the core's default: 32).
  * `:stdlib` - the standard elements this reactor hosts (`docs/stdlib.md`),
    as comma-separated keys and patterns: `"cf:*,co:gather"`, `"*"` for
    all (default: none). Each serves its key only while no handler of that
    key is registered here and no peer announced one; they are not
    announced to peers. A pattern that matches no standard element is the
    core's `PacketFlow.Error` (PF400) naming it.

  When listening or dialling fails, or the actor store cannot be opened,
  the reactor does not start:
  `start_link/1` returns `{:error, %PacketFlow.Error{}}` (and, as with any
  `init/1` that stops, the linked caller receives the exit).
  """
  @type option ::
          {:name, GenServer.name()}
          | {:reactor_name, String.t()}
          | {:max_inflight, pos_integer()}
          | {:max_queue, non_neg_integer()}
          | {:listen, String.t() | {String.t(), [listen_option()]}}
          | {:connect, String.t() | [String.t() | {String.t(), [connect_option()]}]}
          | {:actor_store, Path.t()}
          | {:actor_passivate_after_ms, pos_integer()}
          | {:actor_remembered_turns, non_neg_integer()}
          | {:stdlib, String.t()}

  @typedoc """
  Options of `listen/3`:

  * `:auth_file` - a tokens file (`.toml` or `.json`, format in
    `docs/security.md`), read when listening starts.
  * `:tokens` - tokens given in code (see `t:token_spec/0`), in addition to
    those of `:auth_file`; the core checks them as it checks a tokens file
    (PF400 naming `tokens[i].field`, never a token's value).
  * `:tls_cert` - a PEM certificate chain, leaf first; with `:tls_key`
    (both or neither) the listener speaks `wss://` only.
  * `:tls_key` - the PEM private key (PKCS#8, PKCS#1 or SEC1) of `:tls_cert`.

  Auth is on when `:auth_file` or `:tokens` is given: every peer must then
  present one of the tokens, and may only submit and serve what that token
  allows.
  """
  @type listen_option ::
          {:auth_file, Path.t()}
          | {:tokens, [token_spec()]}
          | {:tls_cert, Path.t()}
          | {:tls_key, Path.t()}

  @typedoc """
  One token a listener accepts, as a map or keyword list (the fields of an
  entry of a tokens file):

  * `:name` (required) - shown in error messages and logs, never the token.
  * `:token` - the secret, at least 16 bytes of visible ASCII; or
  * `:token_sha256` - instead of `:token`, its SHA-256 in hex, so that the
    code need not hold the secret. Give exactly one of the two.
  * `:submit`, `:serve` - the `group:element` patterns a peer with this
    token may submit and serve: `"*"`, `"df:*"`, `"df:transform"`,
    `"df:user.*"`. Missing means none.
  * `:dashboard` - `true` lets the token open the node's dashboard
    (`/ui/`); default `false`.
  """
  @type token_spec ::
          %{
            required(:name) => String.t(),
            optional(:token) => String.t(),
            optional(:token_sha256) => String.t(),
            optional(:submit) => [String.t()],
            optional(:serve) => [String.t()],
            optional(:dashboard) => boolean()
          }
          | [
              {:name, String.t()}
              | {:token, String.t()}
              | {:token_sha256, String.t()}
              | {:submit, [String.t()]}
              | {:serve, [String.t()]}
              | {:dashboard, boolean()}
            ]

  @typedoc """
  Options of `connect/3`. For both kinds of URL:

  * `:token` - the token presented to a node (or NATS server) that
    requires one (sent in the clear over `ws://`: use `wss://` beyond
    loopback).
  * `:tls_ca` - a PEM file of the authorities a `wss://` node's or a NATS
    server's certificate must chain to (default: the system's root
    certificates).

  WebSocket (`ws://`, `wss://`) only:

  * `:msgpack` - speak MessagePack on this connection instead of JSON
    (default `false`); the peer must offer it.

  NATS (`nats://`, `tls://`) only (see docs/protocol.md, "NATS"):

  * `:namespace` - the prefix of the subjects (default `"pf"`):
    systems with different namespaces share a server without seeing each
    other.
  * `:name` - the connection's name on the server (default
    `"packetflow <node id>"`).
  * `:user`, `:password` - user and password auth (both or neither; or in
    the URL).
  * `:nkey_seed` - NKey auth: the user's seed (`"SU..."`).
  * `:credentials_file` - a `.creds` file (JWT and NKey seed).
  * `:tls_cert`, `:tls_key` - a PEM client certificate and its key (both
    or neither).
  * `:require_tls` - refuse a server that does not speak TLS (default
    `false`).
  * `:connect_timeout_ms` - bound on opening the connection to one server
    (at least 1; default 5000).

  The cluster, NATS only, with JetStream on the servers (docs/protocol.md,
  "Membership"):

  * `:membership` - join the cluster's members (an entry in the bucket
    `<namespace>_members`): route keys and actors are then placed over the
    live members (default `false`).
  * `:membership_heartbeat_ms` - the heartbeat of `:membership` when this
    reactor makes the members bucket, from 10 to 60000 (default 1000): a
    dead member leaves every view within three heartbeats. Given only with
    `:membership` or `:actor_store`.
  * `:actor_store` - keep actor state in the members' bucket
    `<namespace>_actors` (default `false`), so that an actor whose reactor
    stopped or died comes back on another member with its state; implies
    `:membership`. Join before registering actor types (the `:connect`
    option of `start_link/1` does): a reactor started with a file
    `:actor_store`, or whose actor types are registered already, is PF400
    naming `actor_store`.

  A listening reactor's `GET /health` lists the live members under
  `nats.membership`.

  An option of the other kind of URL is `{:error, %PacketFlow.Error{code:
  "PF400"}}` naming it.
  """
  @type connect_option ::
          {:msgpack, boolean()}
          | {:token, String.t()}
          | {:tls_ca, Path.t()}
          | {:namespace, String.t()}
          | {:name, String.t()}
          | {:user, String.t()}
          | {:password, String.t()}
          | {:nkey_seed, String.t()}
          | {:credentials_file, Path.t()}
          | {:tls_cert, Path.t()}
          | {:tls_key, Path.t()}
          | {:require_tls, boolean()}
          | {:connect_timeout_ms, pos_integer()}
          | {:membership, boolean()}
          | {:membership_heartbeat_ms, pos_integer()}
          | {:actor_store, boolean()}

  @typedoc "Where `listen/3` accepts peers: the address bound and the URL to dial (`wss://` with TLS)."
  @type listening :: %{host: String.t(), port: :inet.port_number(), url: String.t()}

  @typedoc """
  Counters from `stats/1`. Each `:handlers` entry counts the packets its
  `group:element` ran here (`:count`), those that failed (`:errors`) and,
  among them, those cancelled (`:cancelled`: PF499, by `cancel/2`, a
  submitter gone, or the packet that called them ending);
  `:forwards_cancelled` counts packets cancelled while forwarded to a
  peer. `:actors` has one entry per actor type
  registered here: actors in memory (`:active`) and in the store only
  (`:passivated`), how many times an actor came into memory and left it,
  and told messages whose turn failed. An actor type's message latency is
  that of its `rm:actor.<type>` entry in `:handlers`. `:routed` counts
  packets by route (answered by a local handler, sent to a WebSocket peer,
  sent as a NATS request); `:nats` is the node's connection to NATS, or
  `nil` off NATS.
  """
  @type stats :: %{
          name: String.t(),
          in_flight: non_neg_integer(),
          queued: non_neg_integer(),
          unrouted: non_neg_integer(),
          forwards_cancelled: non_neg_integer(),
          handlers: [
            %{
              group: String.t(),
              element: String.t(),
              count: non_neg_integer(),
              errors: non_neg_integer(),
              cancelled: non_neg_integer(),
              sum_us: non_neg_integer(),
              p50_us: non_neg_integer(),
              p99_us: non_neg_integer()
            }
          ],
          actors: [
            %{
              actor_type: String.t(),
              active: non_neg_integer(),
              passivated: non_neg_integer(),
              activations: non_neg_integer(),
              passivations: non_neg_integer(),
              tells_failed: non_neg_integer()
            }
          ],
          routed: %{
            local: non_neg_integer(),
            websocket: non_neg_integer(),
            nats: non_neg_integer()
          },
          nats:
            nil
            | %{
                state: String.t(),
                server: String.t(),
                rtt_us: non_neg_integer(),
                served_keys: non_neg_integer(),
                bridged_keys: non_neg_integer(),
                requests_sent: non_neg_integer(),
                requests_served: non_neg_integer(),
                members: nil | [String.t()]
              }
        }

  @options [
    :name,
    :reactor_name,
    :max_inflight,
    :max_queue,
    :listen,
    :connect,
    :actor_store,
    :actor_passivate_after_ms,
    :actor_remembered_turns,
    :stdlib
  ]
  # Extra wait past a packet's own deadline before a submit stops waiting
  # for its result: the core answers every packet by its deadline.
  @grace_ms 5_000

  @doc """
  A child spec; the child id is the `:name` option when given, so several
  reactors can live under one supervisor.
  """
  @spec child_spec([option()]) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      type: :worker,
      shutdown: 5_000
    }
  end

  @doc """
  Starts a reactor linked to the caller. See `t:option/0`.

  Raises `ArgumentError` for unknown options or values of the wrong type,
  and the core's `PacketFlow.Error` (PF400, naming the option) for values
  it refuses, such as `max_inflight: 0` or `stdlib: "cf:sqe"`.
  """
  @spec start_link([option()]) :: GenServer.on_start()
  def start_link(opts \\ []) do
    opts = Keyword.validate!(opts, @options)
    config = config!(opts)

    case Keyword.fetch(opts, :name) do
      {:ok, name} -> GenServer.start_link(__MODULE__, config, name: name)
      :error -> GenServer.start_link(__MODULE__, config)
    end
  end

  defp config!(opts) do
    name =
      case Keyword.fetch(opts, :reactor_name) do
        {:ok, n} when is_binary(n) ->
          n

        {:ok, other} ->
          raise ArgumentError, "reactor_name must be a string, got: #{inspect(other)}"

        :error ->
          name_of(opts[:name])
      end

    config = %{
      # As the NIF takes them: {name, max_inflight, max_queue,
      # actor_passivate_after_ms, actor_remembered_turns, stdlib}.
      settings:
        {name, count!(opts, :max_inflight), count!(opts, :max_queue),
         count!(opts, :actor_passivate_after_ms), count!(opts, :actor_remembered_turns),
         patterns!(opts, :stdlib)},
      actor_store: path!(opts[:actor_store], :actor_store, "the reactor"),
      listen: listen_option!(Keyword.get(opts, :listen)),
      connect: connect_option!(Keyword.get(opts, :connect, []))
    }

    # The core judges the values (and fills in its defaults for nil).
    case Native.reactor_check_config(config.settings) do
      :ok -> config
      {:error, error} -> raise error
    end
  end

  # A network request as the GenServer runs it: `{:listen, addr, options}`
  # or `{:connect, url, options}`, the options already in the NIF's shape
  # and wrapped in a function, so that a token never shows in a crash
  # report or an inspected message (a function inspects as its name).
  defp listen_option!(nil), do: nil
  defp listen_option!(addr) when is_binary(addr), do: listen_request!(addr, [])

  defp listen_option!({addr, opts}) when is_binary(addr) and is_list(opts),
    do: listen_request!(addr, opts)

  defp listen_option!(other),
    do:
      raise(
        ArgumentError,
        "listen must be an address string or {address, listen_options}, got: #{inspect(other)}"
      )

  defp connect_option!(url) when is_binary(url), do: [connect_request!(url, [])]

  defp connect_option!(peers) when is_list(peers) do
    Enum.map(peers, fn
      url when is_binary(url) ->
        connect_request!(url, [])

      {url, opts} when is_binary(url) and is_list(opts) ->
        connect_request!(url, opts)

      other ->
        raise ArgumentError, "connect entries are URLs or {url, opts}, got: #{inspect(other)}"
    end)
  end

  defp connect_option!(other),
    do: raise(ArgumentError, "connect must be a URL or a list of URLs, got: #{inspect(other)}")

  defp listen_request!(addr, opts) do
    opts = options!(opts, [:auth_file, :tokens, :tls_cert, :tls_key], "listen", addr)

    native =
      {path!(opts[:auth_file], :auth_file, addr), tokens(opts[:tokens]),
       path!(opts[:tls_cert], :tls_cert, addr), path!(opts[:tls_key], :tls_key, addr)}

    {:listen, addr, fn -> native end}
  end

  @connect_options [
    :msgpack,
    :token,
    :tls_ca,
    :namespace,
    :name,
    :user,
    :password,
    :nkey_seed,
    :credentials_file,
    :tls_cert,
    :tls_key,
    :require_tls,
    :connect_timeout_ms,
    :membership,
    :membership_heartbeat_ms,
    :actor_store
  ]

  # The options as the NIF takes them: a map with every key, each value of
  # the type checked here (nil when not given). Which of them apply to the
  # URL (WebSocket or NATS), and their values, are the core's to judge.
  defp connect_request!(url, opts) do
    opts = options!(opts, @connect_options, "connect", url)

    native = %{
      msgpack: flag!(opts, :msgpack, url),
      token: secret!(opts[:token], "token", url),
      tls_ca: path!(opts[:tls_ca], :tls_ca, url),
      namespace: text!(opts[:namespace], :namespace, url),
      name: text!(opts[:name], :name, url),
      user: text!(opts[:user], :user, url),
      password: secret!(opts[:password], "password", url),
      nkey_seed: secret!(opts[:nkey_seed], "nkey_seed", url),
      credentials_file: path!(opts[:credentials_file], :credentials_file, url),
      tls_cert: path!(opts[:tls_cert], :tls_cert, url),
      tls_key: path!(opts[:tls_key], :tls_key, url),
      require_tls: flag!(opts, :require_tls, url),
      connect_timeout_ms: millis!(opts[:connect_timeout_ms], :connect_timeout_ms, url),
      membership: flag!(opts, :membership, url),
      membership_heartbeat_ms:
        millis!(opts[:membership_heartbeat_ms], :membership_heartbeat_ms, url),
      actor_store: flag!(opts, :actor_store, url)
    }

    {:connect, url, fn -> native end}
  end

  defp flag!(opts, key, where) do
    case Keyword.get(opts, key, false) do
      flag when is_boolean(flag) ->
        flag

      other ->
        raise ArgumentError, "#{key} must be a boolean, got: #{inspect(other)} (for #{where})"
    end
  end

  defp text!(nil, _key, _where), do: nil
  defp text!(text, _key, _where) when is_binary(text), do: text

  defp text!(other, key, where),
    do: raise(ArgumentError, "#{key} must be a string, got: #{inspect(other)} (for #{where})")

  # A count of milliseconds (what fits the NIF's u64); its range is the
  # core's to judge.
  @max_u64 18_446_744_073_709_551_615
  defp millis!(nil, _key, _where), do: nil
  defp millis!(ms, _key, _where) when is_integer(ms) and ms in 0..@max_u64, do: ms

  defp millis!(other, key, where),
    do:
      raise(
        ArgumentError,
        "#{key} must be a non-negative integer, got: #{inspect(other)} (for #{where})"
      )

  # A keyword list of known options (the last of a repeated key wins, as
  # with `Keyword.get/2`).
  defp options!(opts, known, what, where) do
    if not Keyword.keyword?(opts) do
      raise ArgumentError,
            "#{what} options must be a keyword list, got: #{inspect(opts)} (for #{where})"
    end

    case Enum.uniq(Keyword.keys(opts) -- known) do
      [] ->
        opts

      unknown ->
        raise ArgumentError,
              "unknown #{what} options #{inspect(unknown)} (for #{where}); expected #{inspect(known)}"
    end
  end

  defp path!(nil, _key, _where), do: nil
  defp path!(path, _key, _where) when is_binary(path), do: path

  defp path!(path, key, where) when is_list(path) do
    IO.chardata_to_string(path)
  rescue
    ArgumentError ->
      raise ArgumentError, "#{key} must be a path, got: #{inspect(path)} (for #{where})"
  end

  defp path!(other, key, where),
    do: raise(ArgumentError, "#{key} must be a path, got: #{inspect(other)} (for #{where})")

  # A string that may be a secret: an error names its type, never its value.
  defp secret!(nil, _what, _where), do: nil
  defp secret!(text, _what, _where) when is_binary(text), do: text

  defp secret!(other, what, where),
    do: raise(ArgumentError, "#{what} must be a string, got #{kind(other)} (for #{where})")

  # Token entries as the core reads them: a list of maps. Keyword lists
  # become maps; everything else goes as it is, for the core to judge.
  defp tokens(list) when is_list(list), do: Enum.map(list, &token_entry/1)
  defp tokens(other), do: other

  defp token_entry(entry) when is_list(entry) do
    if Keyword.keyword?(entry), do: Map.new(entry), else: entry
  end

  defp token_entry(entry), do: entry

  defp kind(value) when is_integer(value), do: "an integer"
  defp kind(value) when is_float(value), do: "a float"
  defp kind(value) when is_atom(value), do: "an atom"
  defp kind(value) when is_binary(value), do: "a string"
  defp kind(value) when is_list(value), do: "a list"
  defp kind(value) when is_map(value), do: "a map"
  defp kind(value) when is_tuple(value), do: "a tuple"
  defp kind(_value), do: "a term"

  # An atom name names the reactor in its stats; otherwise the core's
  # default name.
  defp name_of(name) when is_atom(name) and name != nil do
    name |> Atom.to_string() |> String.replace_prefix("Elixir.", "")
  end

  defp name_of(_), do: nil

  # A count option as the NIF takes it (nil: the core's default).
  defp count!(opts, key) do
    case Keyword.get(opts, key) do
      n when (is_integer(n) and n >= 0) or n == nil ->
        n

      other ->
        raise ArgumentError, "#{key} must be a non-negative integer, got: #{inspect(other)}"
    end
  end

  # Patterns as the NIF takes them (nil: none); the core parses them.
  defp patterns!(opts, key) do
    case Keyword.get(opts, key) do
      text when is_binary(text) or text == nil ->
        text

      other ->
        raise ArgumentError, "#{key} must be a string of patterns, got: #{inspect(other)}"
    end
  end

  @doc """
  Registers `fun` as the handler of `group:element`, replacing any handler
  it had. Packets already routed to the handler it replaces still run that
  one.

  `fun` takes `(data, ctx)` or `(data)`; see `t:handler/0` for what it may
  return. Returns `{:error, %PacketFlow.Error{code: "PF400"}}` when a name
  breaks the protocol's rules (groups are `cf df ed co mc rm`; elements are
  1-64 characters of `[A-Za-z0-9_.-]`).
  """
  @spec register(t(), PacketFlow.name(), PacketFlow.name(), handler()) ::
          :ok | {:error, PacketFlow.Error.t()}
  def register(reactor, group, element, fun) do
    fun =
      cond do
        is_function(fun, 2) ->
          fun

        is_function(fun, 1) ->
          fn data, _ctx -> fun.(data) end

        true ->
          raise ArgumentError,
                "a handler must be a function of arity 1 or 2, got: #{inspect(fun)}"
      end

    key = {PacketFlow.name!(group, "group"), PacketFlow.name!(element, "element")}
    GenServer.call(reactor, {:register, key, fun})
  end

  @doc """
  Removes the handler of `group:element`; `false` if there was none.

  Packets already routed to it (running, or on their way to a handler
  process) still run it, as they would on any PacketFlow node; later
  submits find no handler.
  """
  @spec unregister(t(), PacketFlow.name(), PacketFlow.name()) :: boolean()
  def unregister(reactor, group, element) do
    key = {PacketFlow.name!(group, "group"), PacketFlow.name!(element, "element")}
    GenServer.call(reactor, {:unregister, key})
  end

  @doc """
  Submits a packet and waits for its result.

  Always `{:ok, %PacketFlow.Result{}}`: a failure is a result with
  `status: :error` and its `PacketFlow.Error` (PF001 no handler, PF400
  invalid field, PF408 timeout, PF409 duplicate id, PF424 dependency
  failed, PF429 queue full, PF499 cancelled (`cancel/2`), PF500 handler
  failed, PF503 stopping).

  The packet is converted and submitted by the calling process, which
  then waits for its result message (never through the reactor's
  GenServer). Raises `ArgumentError` when it is not a map or keyword list
  of known fields, or when a value is not JSON-shaped (the message names
  the type and the path). Exits with `{:noproc, _}` when the reactor is not
  running, as a `GenServer.call` would.
  """
  @spec submit(t(), packet()) :: {:ok, Result.t()}
  def submit(reactor, packet) when is_list(packet), do: submit(reactor, Map.new(packet))

  def submit(reactor, packet) do
    tag = make_ref()

    case Native.reactor_submit(GenServer.whereis(reactor), packet, tag, submitter()) do
      {:pending, timeout_ms} ->
        {:ok, await_native(tag, timeout_ms, {__MODULE__, :submit, [reactor, packet]})}

      {:done, result} ->
        {:ok, result}

      {:badarg, message} ->
        raise ArgumentError, message

      :noproc ->
        exit({:noproc, {__MODULE__, :submit, [reactor, packet]}})
    end
  end

  @doc false
  # Waits for the answer `{:pf_result, tag, answer}` of a native call made
  # by this process, which the core sends by `timeout_ms`; exits like a
  # timed-out GenServer.call (naming `call`) if it never comes.
  @spec await_native(reference(), non_neg_integer(), {module(), atom(), list()}) :: term()
  def await_native(tag, timeout_ms, call) do
    receive do
      {:pf_result, ^tag, answer} -> answer
    after
      timeout_ms + @grace_ms -> exit({:timeout, call})
    end
  end

  @submitter :"$packetflow_submitter"

  @doc false
  # The calling process as the NIFs know it: a native resource, made on its
  # first submit and kept in its process dictionary, that points at the
  # submit it waits for. When the process ends, the BEAM frees the resource
  # with its dictionary, which cancels that submit's packet; a process that
  # stopped waiting (a timeout it caught) has its old submit cancelled by
  # its next one. One per process, not one per submit.
  @spec submitter() :: reference()
  def submitter do
    case Process.get(@submitter) do
      nil ->
        submitter = Native.submitter_new()
        Process.put(@submitter, submitter)
        submitter

      submitter ->
        submitter
    end
  end

  @doc """
  Submits `data` to `group:element` and returns the handler's data.

  `opts` are the other packet fields (`:priority`, `:timeout_ms`, `:id`,
  `:dependencies`, `:metadata`). Returns `{:ok, data}` or
  `{:error, %PacketFlow.Error{code: "PF500", message: ...}}`; raises like
  `submit/2` for values that cannot cross.

  A process that ends while waiting here cancels its packet (see
  `cancel/2`).
  """
  @spec call(t(), PacketFlow.name(), PacketFlow.name(), PacketFlow.value(), keyword()) ::
          {:ok, PacketFlow.value()} | {:error, PacketFlow.Error.t()}
  def call(reactor, group, element, data \\ nil, opts \\ []) when is_list(opts) do
    packet =
      case opts do
        [] -> %{group: group, element: element, data: data}
        _ -> opts |> Map.new() |> Map.merge(%{group: group, element: element, data: data})
      end

    {:ok, result} = submit(reactor, packet)
    Result.to_tuple(result)
  end

  @doc """
  Cancels the packet `packet_id` in flight on this reactor: whether it was
  submitted here (by any process) or came from a peer.

  The packet is answered at once with `PacketFlow.Error` PF499 (`packet X
  was cancelled`): a `call/5` waiting for it returns
  `{:error, %PacketFlow.Error{code: "PF499"}}`, a `submit/2` a result with
  that error (a peer's submitter gets the same). Work it has not started
  never starts (waiting for a slot, for a dependency, in an actor's
  mailbox); the worker process running its handler, or its actor's
  `handle_message`, is sent `{:packetflow_cancelled, packet_id}` (see
  `PacketFlow.Context`); every `PacketFlow.Context.call/5` it has in
  flight is cancelled with it, here and on the peers they went to; packets
  depending on it answer PF424. For a packet submitted in this VM, the
  submitter's answer and the handler's notice are sent before `cancel/2`
  returns (one that came from a peer is answered on its connection next).

  Returns `true` if the packet was in flight (cancelled now, or already:
  cancelling is idempotent), `false` if it is not, or no longer, in
  flight: nothing is remembered for a later submit with that id. Exits with
  `{:noproc, _}` when the reactor is not running.

  A process that ends while it waits in `submit/2`, `call/5` or a
  `PacketFlow.Actors` function cancels its packet the same way (a native
  handle in its process dictionary, under `:"$packetflow_submitter"`,
  freed by the BEAM when the process ends, withdraws the packet); a
  process that stopped waiting (it caught the exit of a timeout) has that
  packet cancelled by its next submit.
  """
  @spec cancel(t(), String.t()) :: boolean()
  def cancel(reactor, packet_id) when is_binary(packet_id) do
    case Native.reactor_cancel(GenServer.whereis(reactor), packet_id) do
      :noproc -> exit({:noproc, {__MODULE__, :cancel, [reactor, packet_id]}})
      cancelled -> cancelled
    end
  end

  @doc """
  Accepts peers on `addr` (`"HOST:PORT"`; port 0 picks a free one).

  Peers dial `url` (`ws://HOST:PORT/packetflow/v1`, or `wss://` with TLS);
  the same port answers `GET /health` and `GET /metrics`. See
  `t:listen_option/0` for tokens and TLS; the files are read here.

  Returns `{:error, %PacketFlow.Error{}}` with PF503 when the address
  cannot be bound, PF400 for a bad tokens file, token entry or TLS file
  (the message names it, never a token's value). Raises `ArgumentError`
  naming the option for unknown options, or paths that are not strings.
  """
  @spec listen(t(), String.t(), [listen_option()]) ::
          {:ok, listening()} | {:error, PacketFlow.Error.t()}
  def listen(reactor, addr, opts \\ []) when is_binary(addr) and is_list(opts) do
    request = listen_request!(addr, opts)
    # The core answers: binding succeeds or fails at once.
    GenServer.call(reactor, {:network, request}, :infinity)
  end

  @doc """
  Dials a peer at `url` (`ws://HOST:PORT/packetflow/v1`, or `wss://`), or
  joins a NATS system (`nats://HOST:PORT` or `tls://`, several servers
  separated by commas). See `t:connect_option/0`.

  Returns `:ok` once the connection is up and the peer's handlers are
  known (on NATS: once this reactor's handlers are subscribed on the
  server), so a submit right after is routed to them. A connection lost later
  is redialled with backoff until the reactor stops. Returns
  `{:error, %PacketFlow.Error{}}` when the first dial fails: PF401 when the
  node (or NATS server) refuses the credentials (or wanted some), PF503
  when it cannot be reached or the TLS handshake fails, or when the node
  does not finish the handshake within the core's handshake timeout (10 s;
  the message says why), PF400 (naming the option) for a malformed URL,
  token or file, half of a pair, a heartbeat out of bounds, `:actor_store`
  on a reactor whose actor types use another store, or an option of the
  other kind of URL; PF503 also for membership without JetStream.
  Raises `ArgumentError` naming the option for unknown options or values
  of the wrong type.
  """
  @spec connect(t(), String.t(), [connect_option()]) :: :ok | {:error, PacketFlow.Error.t()}
  def connect(reactor, url, opts \\ []) when is_binary(url) and is_list(opts) do
    request = connect_request!(url, opts)
    # The core answers: it bounds the whole dial (TCP, TLS, upgrade, hello)
    # by its handshake timeout.
    GenServer.call(reactor, {:network, request}, :infinity)
  end

  @doc "A snapshot of the reactor's counters. See `t:stats/0`."
  @spec stats(t()) :: stats()
  def stats(reactor), do: GenServer.call(reactor, :stats)

  @doc """
  Stops the reactor. Packets in flight are answered PF503, handler workers
  are shut down and the native reactor is freed.
  """
  @spec stop(t(), timeout()) :: :ok
  def stop(reactor, timeout \\ :infinity), do: GenServer.stop(reactor, :normal, timeout)

  ## GenServer callbacks

  @impl true
  def init(config) do
    # Exits of the dispatcher arrive as messages, so the reactor can stop
    # cleanly (answering what is in flight) instead of dying with it.
    Process.flag(:trap_exit, true)
    {:ok, dispatcher} = Dispatcher.start_link()
    pool = Dispatcher.pool(dispatcher)

    case Native.reactor_new(config.settings, config.actor_store, pool) do
      {:ok, native} ->
        start(native, dispatcher, config)

      {:error, error} ->
        Process.exit(dispatcher, :shutdown)
        {:stop, error}
    end
  end

  defp start(native, dispatcher, config) do
    state = %{
      native: native,
      dispatcher: dispatcher,
      network: %{},
      # Tags below this one were used by the `:listen`/`:connect` options.
      next_tag: 1 + length(config.connect),
      next_handler_id: 1
    }

    case join_network(state, config) do
      :ok ->
        {:ok, state}

      {:error, error} ->
        Native.reactor_stop(native)
        Process.exit(dispatcher, :shutdown)
        {:stop, error}
    end
  end

  # The `:listen` and `:connect` options, in order, before start_link
  # returns; the first failure stops the start.
  defp join_network(state, config) do
    requests = List.wrap(config.listen) ++ config.connect

    requests
    |> Enum.with_index()
    |> Enum.reduce_while(:ok, fn {request, tag}, :ok ->
      case start_network(state.native, request, tag) do
        :ok ->
          # The core answers every request, a dial within its handshake
          # timeout.
          receive do
            {:pf_net, ^tag, {:ok, _}} -> {:cont, :ok}
            {:pf_net, ^tag, {:error, _} = error} -> {:halt, error}
          end

        {:error, _} = error ->
          {:halt, error}
      end
    end)
  end

  # The answer arrives as `{:pf_net, tag, {:ok, _} | {:error, _}}`; options
  # the core refuses are `{:error, _}` at once.
  defp start_network(native, {:listen, addr, options}, tag),
    do: Native.reactor_listen(native, addr, options.(), tag)

  defp start_network(native, {:connect, url, options}, tag),
    do: Native.reactor_connect(native, url, options.(), tag)

  @impl true
  def handle_call({:register, {group, element}, fun}, _from, state) do
    # Every registration has an id of its own: a packet routed to it runs
    # this function even if the key is registered again or removed before
    # it runs. The NIF tells the dispatcher to forget the function once
    # the core lets go of the registration (see PacketFlow.Reactor.Dispatcher).
    id = state.next_handler_id
    state = %{state | next_handler_id: id + 1}
    # The dispatcher learns the function before the core can route to it.
    :ok = Dispatcher.put(state.dispatcher, id, fun)
    {:reply, Native.reactor_register(state.native, group, element, id), state}
  end

  def handle_call({:register_actor, type, code, initial, message_types}, _from, state) do
    # As a handler: the dispatcher keeps the module under a registration
    # id of its own, and its workers run the turns.
    id = state.next_handler_id
    state = %{state | next_handler_id: id + 1}
    :ok = Dispatcher.put(state.dispatcher, id, code)
    {:reply, Native.actor_register(state.native, type, id, initial, message_types), state}
  end

  def handle_call({:unregister, {group, element}}, _from, state) do
    {:reply, Native.reactor_unregister(state.native, group, element), state}
  end

  def handle_call({:network, request}, from, state) do
    # Network calls share the submits' tag counter; their replies come
    # as :pf_net messages, so the tags are never confused.
    tag = state.next_tag
    state = %{state | next_tag: tag + 1}

    case start_network(state.native, request, tag) do
      :ok -> {:noreply, %{state | network: Map.put(state.network, tag, from)}}
      {:error, _} = error -> {:reply, error, state}
    end
  end

  def handle_call(:stats, _from, state) do
    {:reply, Native.reactor_stats(state.native), state}
  end

  @impl true
  def handle_info({:pf_net, tag, outcome}, state) do
    case Map.pop(state.network, tag) do
      {nil, _} ->
        {:noreply, state}

      {from, network} ->
        GenServer.reply(from, network_reply(outcome))
        {:noreply, %{state | network: network}}
    end
  end

  def handle_info({:EXIT, pid, reason}, %{dispatcher: pid} = state) do
    {:stop, {:dispatcher_exited, reason}, state}
  end

  def handle_info({:EXIT, _pid, :normal}, state), do: {:noreply, state}

  def handle_info({:EXIT, _pid, reason}, state) do
    # A linked process crashed: without trapping exits the reactor would
    # have died with it, so it stops the same way (answering what is in
    # flight on its way out).
    {:stop, reason, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp network_reply({:ok, :ok}), do: :ok
  defp network_reply(outcome), do: outcome

  @impl true
  def terminate(_reason, state) do
    # Packets in flight are answered PF503 by the core, straight to the
    # processes that submitted them.
    Native.reactor_stop(state.native)
    Process.exit(state.dispatcher, :shutdown)
    :ok
  end
end
