# The Hex tarball writer (hex_core, from Debian's rebar3).
Code.require_file("packetflow_hex_tarball.exs", __DIR__)

defmodule Mix.Tasks.Packetflow.Publish do
  @shortdoc "Assembles the self-contained Hex package and publishes it"
  @moduledoc """
  Assembles PacketFlow's Hex package in a directory of its own and
  publishes it with Hex.

      mix packetflow.publish [--out DIR] [--prebuilt LIBRARY] [--tarball FILE]
                             [--no-publish] [-- HEX_PUBLISH_ARGS...]

  In the repository the NIF crate `native/packetflow_nif` is a member of
  the root Cargo workspace: it inherits its version, edition and dependency
  versions from the root `Cargo.toml` and depends on the core crate in
  `core/`, outside this package. The package made here builds on its own:

    * `native/packetflow_core/` is the core crate as `cargo package` makes
      it (its sources and a manifest with every workspace value written
      out);
    * `native/packetflow_nif/Cargo.toml` is the NIF manifest with the
      workspace values written out, `packetflow` pointing at
      `../packetflow_core`, the root's `[profile.*]` tables and an empty
      `[workspace]` table (cargo does not look in parent directories);
    * `native/packetflow_nif/Cargo.lock` is the repository's `Cargo.lock`,
      trimmed by cargo to the crates the NIF uses; every version in it is
      one the repository builds with, and the package's compiler builds
      with `cargo build --locked`.

  With `--prebuilt LIBRARY` (a NIF library built from this repository for
  x86_64 Linux with glibc, e.g. `target/release/libpacketflow_nif.so`), the
  package also carries it, as `native/prebuilt/x86_64-linux-gnu/`, with
  `native/prebuilt/prebuilt.config` saying what it needs: the NIF version
  (the rustler feature of the NIF crate), the newest glibc symbol version
  it links against, and its SHA-256. The package's compiler installs it
  where it fits instead of running cargo (see
  `Mix.Tasks.Compile.PacketflowNif`).

  The directory holds exactly the files that `package[:files]` in `mix.exs`
  lists (what `mix hex.build` would put in the tarball). The default is
  `_build/hex/packetflow-VERSION`; an existing directory is replaced only
  if it is empty or an earlier package.

  With `--tarball FILE`, the package is also written as the tarball Hex
  publishes (what `mix hex.build` makes). `mix hex.build` itself needs the
  Hex archive; the tarball is made here by hex_core, the library that Hex
  builds its tarballs with, from the copy that Debian's `rebar3` package
  carries (`PacketFlow.HexTarball`, mix/packetflow_hex_tarball.exs).

  Then, when Hex is installed (`mix local.hex`), it runs Hex's
  `hex.publish` task in that directory, which shows the package and asks
  for confirmation. The arguments after `--` go to `hex.publish`; the
  default is `package` (the package has no ex_doc dependency: publish the
  documentation separately with `mix hex.publish docs` from a project that
  has one). Without Hex, or with `--no-publish`, the task stops after
  assembling and prints the command that publishes the directory;
  `--publish` makes a missing Hex an error.

  This task exists only in the repository: it is not part of the package.
  """
  use Mix.Task

  @nif "packetflow_nif"
  @core "packetflow_core"
  @root Path.expand("..", __DIR__)

  # Paths of the package that this task makes rather than copies.
  @generated ["native/#{@core}", "native/#{@nif}/Cargo.lock"]
  # ... and that it makes only when asked (--prebuilt).
  @optional_generated ["native/prebuilt"]
  @prebuilt_target "x86_64-linux-gnu"

  @impl true
  def run(args) do
    {opts, hex_args} = parse_args(args)
    config = Mix.Project.config()

    unless config[:app] == :packetflow do
      Mix.raise("mix packetflow.publish runs in the packetflow project (bindings-elixir/)")
    end

    repo = Path.expand("..", @root)

    unless File.regular?(Path.join(repo, "Cargo.toml")) and
             File.regular?(Path.join([repo, "core", "Cargo.toml"])) do
      Mix.raise(
        "mix packetflow.publish assembles the package from the repository " <>
          "(#{repo} has no Cargo workspace with core/)"
      )
    end

    version = config[:version]
    out = Path.expand(opts[:out] || Path.join([@root, "_build", "hex", "packetflow-#{version}"]))
    files = get_in(config, [:package, :files]) || Mix.raise("mix.exs has no package[:files]")

    replaceable!(out)
    shipped = assemble(repo, files, out, opts[:prebuilt] && Path.expand(opts[:prebuilt]))
    Mix.shell().info("packetflow #{version}: #{length(shipped)} files in #{out}")

    if tarball = opts[:tarball] do
      tarball = Path.expand(tarball)
      PacketFlow.HexTarball.create!(hex_metadata(config, shipped), out, shipped, tarball)
      Mix.shell().info("packetflow #{version}: Hex tarball #{tarball}")
    end

    command = "cd #{out} && mix hex.publish #{Enum.join(hex_args, " ")}"

    case {opts[:publish], hex_available?()} do
      {false, _} ->
        Mix.shell().info("Publish it with:\n\n    #{command}\n")

      {nil, false} ->
        Mix.shell().info(
          "Hex is not installed (mix local.hex). Publish it with:\n\n    #{command}\n"
        )

      {true, false} ->
        Mix.raise(
          "Hex is not installed (mix local.hex). The package is ready:\n\n    #{command}\n"
        )

      {_, true} ->
        publish(out, hex_args)
    end
  end

  # Arguments after `--` belong to hex.publish.
  defp parse_args(args) do
    {own, hex_args} =
      case Enum.split_while(args, &(&1 != "--")) do
        {own, ["--" | rest]} -> {own, rest}
        {own, []} -> {own, []}
      end

    {opts, rest} =
      OptionParser.parse!(own,
        strict: [out: :string, publish: :boolean, prebuilt: :string, tarball: :string]
      )

    if rest != [] do
      Mix.raise("mix packetflow.publish: unexpected argument #{inspect(hd(rest))}")
    end

    {opts, if(hex_args == [], do: ["package"], else: hex_args)}
  end

  defp hex_available? do
    Mix.Task.get("hex.publish") != nil
  end

  # The metadata `mix hex.build` writes for this project (no dependencies).
  defp hex_metadata(config, shipped) do
    package = config[:package]

    %{
      "name" => to_string(package[:name] || config[:app]),
      "app" => to_string(config[:app]),
      "version" => config[:version],
      "description" => config[:description],
      "elixir" => config[:elixir],
      "build_tools" => ["mix"],
      "licenses" => package[:licenses],
      "links" => package[:links],
      "requirements" => %{},
      "files" => shipped
    }
  end

  @doc """
  Builds the package from the repository `repo` into `out` and returns the
  shipped files (paths relative to `out`); `prebuilt` is a NIF library to
  ship as the prebuilt one for x86_64 Linux (glibc), or nil.
  """
  @spec assemble(Path.t(), [String.t()], Path.t(), Path.t() | nil) :: [String.t()]
  def assemble(repo, files, out, prebuilt \\ nil) do
    stage =
      Path.join(System.tmp_dir!(), "packetflow-package-#{System.unique_integer([:positive])}")

    try do
      File.mkdir_p!(stage)
      copy_sources(files, stage)
      vendor_core(repo, stage)
      write_nif_manifest(repo, stage)
      write_lockfile(repo, stage)
      if prebuilt, do: write_prebuilt(prebuilt, stage)
      ship(files, stage, out)
    after
      File.rm_rf!(stage)
    end
  end

  defp copy_sources(files, stage) do
    for entry <- files do
      matches = Path.wildcard(Path.join(@root, entry), match_dot: true)

      cond do
        matches != [] ->
          for source <- matches do
            target = Path.join(stage, Path.relative_to(source, @root))
            File.mkdir_p!(Path.dirname(target))
            File.cp_r!(source, target)
          end

        generated?(entry) ->
          :ok

        true ->
          Mix.raise("package[:files] lists #{inspect(entry)}, which does not exist in #{@root}")
      end
    end

    :ok
  end

  defp generated?(entry),
    do:
      Enum.any?(
        @generated ++ @optional_generated,
        &(entry == &1 or String.starts_with?(&1, entry <> "/"))
      )

  # The prebuilt library and what it needs, as the compiler reads it.
  defp write_prebuilt(library, stage) do
    unless File.regular?(library), do: Mix.raise("--prebuilt #{library}: no such file")
    binary = File.read!(library)
    dir = Path.join([stage, "native", "prebuilt"])
    file = "#{@prebuilt_target}/lib#{@nif}.so"
    File.mkdir_p!(Path.join(dir, @prebuilt_target))
    File.write!(Path.join(dir, file), binary)

    spec = [
      file: file,
      nif_version: nif_version(),
      glibc: glibc_needed(binary, library),
      sha256: :crypto.hash(:sha256, binary) |> Base.encode16(case: :lower)
    ]

    spec = Enum.map(spec, fn {key, value} -> {key, String.to_charlist(value)} end)

    File.write!(Path.join(dir, "prebuilt.config"), [
      "%% The prebuilt NIF libraries of this package, by target (see\n",
      "%% Mix.Tasks.Compile.PacketflowNif). Written by mix packetflow.publish.\n",
      :io_lib.format(~c"~p.~n", [{String.to_charlist(@prebuilt_target), spec}])
    ])
  end

  # The NIF version the crate is built for: its rustler feature.
  defp nif_version do
    manifest = File.read!(Path.join([@root, "native", @nif, "Cargo.toml"]))

    case Regex.run(~r/"nif_version_(\d+)_(\d+)"/, manifest) do
      [_, major, minor] -> "#{major}.#{minor}"
      nil -> Mix.raise("#{@nif}'s Cargo.toml names no rustler nif_version_* feature")
    end
  end

  # The newest glibc symbol version the library needs (its ELF version
  # requirements are plain strings in its dynamic string table).
  defp glibc_needed(binary, library) do
    case Regex.scan(~r/GLIBC_(\d+)\.(\d+)/, binary, capture: :all_but_first) do
      [] ->
        Mix.raise("#{library} needs no glibc symbol: not a library built for x86_64-linux-gnu")

      found ->
        found
        |> Enum.map(fn parts -> Enum.map(parts, &String.to_integer/1) end)
        |> Enum.max()
        |> Enum.join(".")
    end
  end

  # The core crate as cargo packages it: cargo resolves the workspace
  # inheritance and picks the files a crate ships.
  defp vendor_core(repo, stage) do
    work = Path.join(stage, ".cargo-package")

    cargo!(
      ["package", "-p", "packetflow", "--no-verify", "--allow-dirty", "--target-dir", work],
      cd: repo
    )

    crate =
      case Path.wildcard(Path.join([work, "package", "packetflow-*.crate"])) do
        [crate] -> crate
        other -> Mix.raise("cargo package left #{length(other)} packetflow crates in #{work}")
      end

    unpacked = Path.join(work, "unpacked")

    :ok =
      :erl_tar.extract(String.to_charlist(crate), [:compressed, cwd: String.to_charlist(unpacked)])

    [top] = File.ls!(unpacked)
    target = Path.join([stage, "native", @core])
    File.mkdir_p!(Path.dirname(target))
    File.rename!(Path.join(unpacked, top), target)

    # The NIF's lock file pins the versions; cargo's bookkeeping is not shipped.
    for extra <- [".cargo_vcs_info.json", "Cargo.lock", "Cargo.toml.orig"] do
      File.rm!(Path.join(target, extra))
    end

    File.rm_rf!(work)
    :ok
  end

  defp write_nif_manifest(repo, stage) do
    workspace = parse_toml_tables(File.read!(Path.join(repo, "Cargo.toml")))
    source = Path.join([@root, "native", @nif, "Cargo.toml"])
    manifest = standalone_manifest(File.read!(source), workspace, source)
    File.write!(Path.join([stage, "native", @nif, "Cargo.toml"]), manifest)
  end

  defp write_lockfile(repo, stage) do
    repo_lock = File.read!(Path.join(repo, "Cargo.lock"))
    lock = Path.join([stage, "native", @nif, "Cargo.lock"])
    File.write!(lock, repo_lock)
    manifest = Path.join([stage, "native", @nif, "Cargo.toml"])

    # Cargo drops the entries the NIF does not use and keeps every other
    # version as it was; --locked would refuse, since dropping is a change.
    cargo!(["metadata", "--format-version", "1", "--manifest-path", manifest],
      cd: stage,
      quiet: true
    )

    pinned = MapSet.new(lock_entries(repo_lock))

    case Enum.reject(lock_entries(File.read!(lock)), &MapSet.member?(pinned, &1)) do
      [] ->
        :ok

      new ->
        Mix.raise(
          "the package's Cargo.lock has versions the repository's lock does not: " <>
            Enum.map_join(new, ", ", fn {name, version} -> "#{name} #{version}" end)
        )
    end
  end

  # Runs cargo offline first (the repository's build has fetched every
  # crate), then online; raises with cargo's output when both fail.
  defp cargo!(args, opts) do
    cargo = System.find_executable("cargo") || Mix.raise("cargo is not on the PATH")
    run = fn extra -> System.cmd(cargo, args ++ extra, cd: opts[:cd], stderr_to_stdout: true) end

    with {_, code} when code != 0 <- run.(["--offline"]),
         {output, code} when code != 0 <- run.([]) do
      Mix.raise("cargo #{Enum.join(args, " ")} failed with exit status #{code}:\n#{output}")
    else
      {output, 0} ->
        if opts[:quiet], do: :ok, else: Mix.shell().info(String.trim_trailing(output))
    end
  end

  defp lock_entries(lock) do
    for [_, name, version] <-
          Regex.scan(~r/^name = "([^"]+)"\nversion = "([^"]+)"/m, lock),
        do: {name, version}
  end

  # Copies from the stage exactly what package[:files] selects, as Hex
  # would: each entry is a wildcard, a directory brings its whole tree.
  defp ship(files, stage, out) do
    shipped =
      files
      |> Enum.flat_map(&Path.wildcard(Path.join(stage, &1), match_dot: true))
      |> Enum.flat_map(&tree/1)
      |> Enum.map(&Path.relative_to(&1, stage))
      |> Enum.uniq()
      |> Enum.sort()

    for path <- @generated,
        not Enum.any?(shipped, &(&1 == path or String.starts_with?(&1, path <> "/"))) do
      Mix.raise(
        "package[:files] in mix.exs must list #{inspect(path)}: the package cannot build without it"
      )
    end

    replaceable!(out)
    File.rm_rf!(out)

    for path <- shipped do
      target = Path.join(out, path)
      File.mkdir_p!(Path.dirname(target))
      File.cp!(Path.join(stage, path), target)
    end

    shipped
  end

  defp tree(path) do
    if File.dir?(path) do
      path |> File.ls!() |> Enum.sort() |> Enum.flat_map(&tree(Path.join(path, &1)))
    else
      [path]
    end
  end

  # `out` is replaced only when it is empty or holds an earlier package.
  defp replaceable!(out) do
    cond do
      not File.exists?(out) ->
        :ok

      File.dir?(out) and File.ls!(out) == [] ->
        :ok

      File.regular?(Path.join(out, "mix.exs")) and
          File.read!(Path.join(out, "mix.exs")) =~ "app: :packetflow" ->
        :ok

      true ->
        Mix.raise("#{out} exists and is not an earlier packetflow package: choose another --out")
    end
  end

  # Runs hex.publish in this VM (it asks for confirmation on this
  # terminal) with the package as the current project. The package's
  # mix.exs defines the same project module as this one, and Mix allows a
  # project module once in its stack: this project steps aside meanwhile.
  defp publish(out, hex_args) do
    Code.compiler_options(ignore_module_conflict: true)
    current = Mix.Project.pop()

    try do
      Mix.Project.in_project(:packetflow, out, fn _ -> Mix.Task.run("hex.publish", hex_args) end)
    after
      if current, do: Mix.Project.push(current.name, current.file)
      Code.compiler_options(ignore_module_conflict: false)
    end
  end

  ## The NIF manifest without the workspace

  @doc false
  # Writes out a member's manifest without workspace inheritance. Handles
  # the forms Cargo allows on one line (`key.workspace = true`,
  # `name = { workspace = true, ... }`) and refuses anything else that
  # mentions the workspace.
  @spec standalone_manifest(String.t(), %{String.t() => [{String.t(), String.t()}]}, Path.t()) ::
          String.t()
  def standalone_manifest(text, workspace, source) do
    package = Map.new(Map.get(workspace, "workspace.package", []))
    deps = Map.new(Map.get(workspace, "workspace.dependencies", []))

    {lines, _section} =
      text
      |> String.split("\n")
      |> Enum.map_reduce(nil, fn line, section ->
        case Regex.run(~r/^\s*\[+([^\]]+)\]+\s*(#.*)?$/, line) do
          [_, "lib" | _] -> {Enum.join([line | lib_name(package, source)], "\n"), "lib"}
          [_, name | _] -> {line, String.trim(name)}
          nil -> {rewrite_line(line, section, package, deps, source), section}
        end
      end)

    profiles =
      for {"profile." <> _ = name, entries} <- Map.get(workspace, :order, []) do
        Enum.join(["[#{name}]" | Enum.map(entries, fn {k, v} -> "#{k} = #{v}" end)], "\n")
      end

    body = lines |> Enum.join("\n") |> String.trim_trailing()

    Enum.join(
      [
        "# The NIF crate of the packetflow Hex package: a workspace of its own,",
        "# depending on the core crate vendored beside it.",
        body,
        "",
        "# Cargo must not look for a workspace in the directories above.",
        "[workspace]",
        "" | Enum.map(profiles, &(&1 <> "\n"))
      ],
      "\n"
    )
  end

  # The library's file name carries the version: a cdylib's file name has
  # no hash in it, so in a target directory shared with the repository's
  # build (or another version's) two crates named alike would overwrite
  # each other's library and both would look up to date to cargo.
  defp lib_name(package, source) do
    version = Map.get(package, "version") || unknown(source, "workspace.package", "version")
    suffix = version |> String.trim("\"") |> String.replace(~r/[^A-Za-z0-9]/, "_")

    [
      "# The version in the library's name keeps it apart from other builds",
      "# of this crate in a shared CARGO_TARGET_DIR.",
      ~s(name = "#{@nif}_#{suffix}")
    ]
  end

  defp rewrite_line(line, section, package, deps, source) do
    cond do
      not String.contains?(line, "workspace") or
          String.starts_with?(String.trim_leading(line), "#") ->
        line

      section == "package" and Regex.match?(~r/^\s*([\w-]+)\.workspace\s*=\s*true\s*$/, line) ->
        [_, key] = Regex.run(~r/^\s*([\w-]+)\./, line)
        "#{key} = #{Map.get(package, key) || unknown(source, "workspace.package", key)}"

      section in ["dependencies", "build-dependencies", "dev-dependencies"] ->
        rewrite_dependency(line, deps, source)

      true ->
        Mix.raise(
          "#{source}: cannot write out #{inspect(String.trim(line))} without the workspace"
        )
    end
  end

  defp rewrite_dependency(line, deps, source) do
    {name, local} =
      case Regex.run(~r/^\s*([\w-]+)\.workspace\s*=\s*true\s*$/, line) do
        [_, name] ->
          {name, []}

        nil ->
          case Regex.run(~r/^\s*([\w-]+)\s*=\s*\{(.*)\}\s*$/, line) do
            [_, name, table] -> {name, inline_table(table)}
            nil -> Mix.raise("#{source}: cannot write out #{inspect(String.trim(line))}")
          end
      end

    unless List.keyfind(local, "workspace", 0) in [nil, {"workspace", "true"}] do
      Mix.raise(
        "#{source}: #{name} has workspace = #{elem(List.keyfind(local, "workspace", 0), 1)}"
      )
    end

    base =
      if name == "packetflow" do
        [{"path", ~s("../#{@core}")}]
      else
        case Map.get(deps, name) || unknown(source, "workspace.dependencies", name) do
          "{" <> _ = table -> table |> String.trim() |> String.slice(1..-2//1) |> inline_table()
          version -> [{"version", version}]
        end
      end

    merged =
      Enum.reduce(List.keydelete(local, "workspace", 0), base, fn
        {"features", extra}, acc ->
          features =
            Enum.uniq(
              strings(elem(List.keyfind(acc, "features", 0) || {"", "[]"}, 1)) ++ strings(extra)
            )

          List.keystore(
            acc,
            "features",
            0,
            {"features", "[" <> Enum.map_join(features, ", ", &~s("#{&1}")) <> "]"}
          )

        {key, value}, acc ->
          List.keystore(acc, key, 0, {key, value})
      end)

    "#{name} = { " <> Enum.map_join(merged, ", ", fn {k, v} -> "#{k} = #{v}" end) <> " }"
  end

  defp unknown(source, table, key),
    do: Mix.raise("#{source} inherits #{key}, which [#{table}] does not define")

  defp strings(list), do: for([_, s] <- Regex.scan(~r/"([^"]*)"/, list), do: s)

  # Splits the inside of an inline table at its top-level commas.
  defp inline_table(text) do
    text
    |> split_top_level()
    |> Enum.map(&String.trim/1)
    |> Enum.reject(&(&1 == ""))
    |> Enum.map(fn pair ->
      [key, value] = String.split(pair, "=", parts: 2)
      {String.trim(key), String.trim(value)}
    end)
  end

  defp split_top_level(text), do: split_top_level(String.graphemes(text), 0, false, "", [])

  defp split_top_level([], _depth, _quoted, current, acc), do: Enum.reverse([current | acc])

  defp split_top_level(["\"" | rest], depth, quoted, cur, acc),
    do: split_top_level(rest, depth, not quoted, cur <> "\"", acc)

  defp split_top_level([c | rest], depth, true, cur, acc),
    do: split_top_level(rest, depth, true, cur <> c, acc)

  defp split_top_level(["," | rest], 0, false, cur, acc),
    do: split_top_level(rest, 0, false, "", [cur | acc])

  defp split_top_level([c | rest], depth, false, cur, acc) when c in ["[", "{"],
    do: split_top_level(rest, depth + 1, false, cur <> c, acc)

  defp split_top_level([c | rest], depth, false, cur, acc) when c in ["]", "}"],
    do: split_top_level(rest, depth - 1, false, cur <> c, acc)

  defp split_top_level([c | rest], depth, false, cur, acc),
    do: split_top_level(rest, depth, false, cur <> c, acc)

  @doc false
  # The one-line `key = value` entries of each table of a manifest, by
  # table name, plus `:order` (the tables in the order they appear).
  @spec parse_toml_tables(String.t()) :: map()
  def parse_toml_tables(text) do
    {tables, _} =
      text
      |> String.split("\n")
      |> Enum.reduce({[], nil}, fn line, {tables, current} ->
        trimmed = String.trim(line)

        cond do
          trimmed == "" or String.starts_with?(trimmed, "#") ->
            {tables, current}

          match = Regex.run(~r/^\[([^\[\]]+)\]$/, trimmed) ->
            {[{Enum.at(match, 1), []} | tables], Enum.at(match, 1)}

          current != nil and trimmed =~ ~r/^[\w.-]+\s*=/ ->
            [key, value] = String.split(trimmed, "=", parts: 2)
            [{^current, entries} | older] = tables
            {[{current, entries ++ [{String.trim(key), String.trim(value)}]} | older], current}

          true ->
            {tables, current}
        end
      end)

    order = Enum.reverse(tables)
    order |> Map.new() |> Map.put(:order, order)
  end
end
