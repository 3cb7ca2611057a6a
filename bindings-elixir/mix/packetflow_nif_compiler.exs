defmodule Mix.Tasks.Compile.PacketflowNif do
  @moduledoc """
  Builds PacketFlow's native library with cargo and installs it as
  `priv/native/libpacketflow_nif.so`, where `PacketFlow.Native` loads it.

  It runs `cargo build --release` on `native/packetflow_nif`, which is
  laid out one of two ways:

    * in the repository, a member of the root Cargo workspace, depending on
      the core crate in `core/`; the target directory is `CARGO_TARGET_DIR`
      when set, otherwise the one cargo reports for the crate (the
      workspace's);
    * in the Hex package (made by `mix packetflow.publish`), a workspace of
      its own beside the vendored core crate `native/packetflow_core`, with
      a `Cargo.lock` that cargo must follow (`--locked`); the target
      directory is `CARGO_TARGET_DIR` when set, otherwise
      `native/packetflow_nif` under the Mix build path (`_build/ENV/`).

  The Hex package made by `make dist` also carries prebuilt libraries in
  `native/prebuilt/` (listed in `native/prebuilt/prebuilt.config`, one per
  target, with the NIF version and the glibc they need and their SHA-256).
  When one fits this machine (its CPU, OS and C library, a glibc at least
  as new as the one it was linked against, an ERTS that offers its NIF
  version) it is installed as it is and cargo is not needed; otherwise the
  library is built from the vendored crates. `PACKETFLOW_BUILD_FROM_SOURCE=1`
  builds from source even where a prebuilt library fits.

  Set `PACKETFLOW_SKIP_NIF_BUILD=1` to use the library already in
  `priv/native/` as it is.
  """
  use Mix.Task.Compiler

  @crate "packetflow_nif"
  @root Path.expand("..", __DIR__)

  @impl true
  def run(_args) do
    if System.get_env("PACKETFLOW_SKIP_NIF_BUILD") in ["1", "true"] do
      link_priv()
      {:noop, []}
    else
      build()
    end
  end

  defp build do
    case prebuilt() do
      {:ok, target, library} ->
        status = install(library, installed_library())
        link_priv()

        if status == :ok,
          do: Mix.shell().info("packetflow: using the prebuilt NIF library for #{target}")

        {status, []}

      {:none, reason} ->
        if reason, do: Mix.shell().info("packetflow: #{reason}; building the NIF from source")
        build_from_source()
    end
  end

  defp installed_library, do: Path.join([@root, "priv", "native", "lib#{@crate}.so"])

  ## Prebuilt libraries (the Hex package made by `make dist`)

  @prebuilt_dir Path.join([@root, "native", "prebuilt"])

  # {:ok, target, path} for the prebuilt library that fits this machine, or
  # {:none, why} (why is nil where the package has no prebuilt library).
  defp prebuilt do
    config = Path.join(@prebuilt_dir, "prebuilt.config")

    cond do
      not File.regular?(config) ->
        {:none, nil}

      System.get_env("PACKETFLOW_BUILD_FROM_SOURCE") in ["1", "true"] ->
        {:none, "PACKETFLOW_BUILD_FROM_SOURCE is set"}

      true ->
        {:ok, entries} = :file.consult(String.to_charlist(config))
        target = host_target()

        case Enum.find(entries, fn {entry, _spec} -> to_string(entry) == target end) do
          nil -> {:none, "no prebuilt NIF library for #{target}"}
          {_, spec} -> check_prebuilt(target, Map.new(spec))
        end
    end
  end

  defp check_prebuilt(target, spec) do
    library = Path.join(@prebuilt_dir, to_string(spec.file))
    nif_version = to_string(:erlang.system_info(:nif_version))

    cond do
      not version_at_least?(nif_version, to_string(spec.nif_version)) ->
        {:none,
         "the prebuilt NIF library needs NIF version #{spec.nif_version}; this ERTS has #{nif_version}"}

      not glibc_at_least?(to_string(spec.glibc)) ->
        {:none, "the prebuilt NIF library needs glibc #{spec.glibc} or newer"}

      not File.regular?(library) or sha256(library) != to_string(spec.sha256) ->
        {:none, "the prebuilt NIF library #{library} is missing or does not match its checksum"}

      true ->
        {:ok, target, library}
    end
  end

  # The target in the prebuilt libraries' naming: CPU-OS-ABI, from ERTS's
  # own triple (x86_64-pc-linux-gnu gives x86_64-linux-gnu).
  defp host_target do
    case String.split(to_string(:erlang.system_info(:system_architecture)), "-") do
      [cpu, _vendor, os, abi | _] -> "#{cpu}-#{os}-#{abi}"
      parts -> Enum.join(parts, "-")
    end
  end

  defp glibc_at_least?(needed) do
    case System.cmd("getconf", ["GNU_LIBC_VERSION"], stderr_to_stdout: true) do
      {"glibc " <> version, 0} -> version_at_least?(String.trim(version), needed)
      _ -> false
    end
  rescue
    # No getconf: not a glibc system that we can tell.
    ErlangError -> false
  end

  defp version_at_least?(have, needed) do
    parse = fn v -> v |> String.split(".") |> Enum.map(&String.to_integer/1) end
    parse.(have) >= parse.(needed)
  rescue
    ArgumentError -> false
  end

  defp sha256(path),
    do: :crypto.hash(:sha256, File.read!(path)) |> Base.encode16(case: :lower)

  ## Building from source

  defp build_from_source do
    manifest = Path.join([@root, "native", @crate, "Cargo.toml"])
    layout = layout()

    with {:ok, target_dir} <- target_dir(layout, manifest),
         :ok <- cargo(build_args(layout, manifest, target_dir)) do
      built = Path.join([target_dir, "release", library_file(lib_name(manifest))])
      status = install(built, installed_library())
      link_priv()
      {status, []}
    else
      {:error, message} ->
        Mix.shell().error(message)
        {:error, [diagnostic(message)]}
    end
  end

  # The Hex package carries the core crate beside the NIF crate.
  defp layout do
    if File.regular?(Path.join([@root, "native", "packetflow_core", "Cargo.toml"])),
      do: :package,
      else: :workspace
  end

  defp build_args(layout, manifest, target_dir) do
    args = [
      "build",
      "--release",
      "--lib",
      "--manifest-path",
      manifest,
      "--target-dir",
      target_dir
    ]

    if layout == :package, do: args ++ ["--locked"], else: args
  end

  defp cargo(args) do
    case System.find_executable("cargo") do
      nil ->
        {:error,
         "cargo is not on the PATH: PacketFlow's native library is built from Rust sources"}

      cargo ->
        case System.cmd(cargo, args, stderr_to_stdout: true, into: IO.stream(:stdio, :line)) do
          {_, 0} -> :ok
          {_, code} -> {:error, "cargo #{Enum.join(args, " ")} failed with exit status #{code}"}
        end
    end
  end

  defp target_dir(layout, manifest) do
    case System.get_env("CARGO_TARGET_DIR") do
      dir when is_binary(dir) and dir != "" ->
        {:ok, Path.expand(dir)}

      _ when layout == :package ->
        {:ok, Path.join([Mix.Project.build_path(), "native", @crate])}

      _ ->
        args = ["metadata", "--format-version", "1", "--no-deps", "--manifest-path", manifest]

        with {out, 0} <- System.cmd("cargo", args, stderr_to_stdout: true),
             [_, dir] <- Regex.run(~r/"target_directory":"((?:[^"\\]|\\.)*)"/, out) do
          {:ok, String.replace(dir, "\\\\", "\\")}
        else
          _ -> {:error, "cannot find cargo's target directory for #{manifest}"}
        end
    end
  end

  # The package's manifest names the library after its version (see
  # `mix packetflow.publish`); the repository's uses the crate name.
  defp lib_name(manifest) do
    case Regex.run(~r/^\[lib\][^\[]*?^name\s*=\s*"([^"]+)"/ms, File.read!(manifest)) do
      [_, name] -> name
      nil -> @crate
    end
  end

  defp library_file(name) do
    case :os.type() do
      {:unix, :darwin} -> "lib#{name}.dylib"
      {:win32, _} -> "#{name}.dll"
      _ -> "lib#{name}.so"
    end
  end

  # Replaces the installed library only when cargo produced a new one. The
  # old file is removed first, never overwritten: a VM that has it loaded
  # maps its pages, and writing into them would crash that VM.
  defp install(built, installed) do
    if same_file?(built, installed) do
      :noop
    else
      File.mkdir_p!(Path.dirname(installed))
      _ = File.rm(installed)
      File.cp!(built, installed)
      :ok
    end
  end

  defp same_file?(a, b) do
    with {:ok, sa} <- File.stat(a, time: :posix),
         {:ok, sb} <- File.stat(b, time: :posix) do
      sa.size == sb.size and sa.mtime <= sb.mtime
    else
      _ -> false
    end
  end

  # Mix links priv/ into _build only if it existed before the compilers
  # ran, which it does not on a clean checkout.
  defp link_priv do
    source = Path.join(@root, "priv")
    target = Path.join(Mix.Project.app_path(), "priv")

    if File.dir?(source) do
      _ = Mix.Utils.symlink_or_copy(source, target)
    end

    :ok
  end

  defp diagnostic(message) do
    %Mix.Task.Compiler.Diagnostic{
      compiler_name: "packetflow_nif",
      file: Path.join([@root, "native", @crate, "Cargo.toml"]),
      message: message,
      position: nil,
      severity: :error
    }
  end
end
