defmodule PacketFlow.HexTarball do
  @moduledoc """
  Writes and reads Hex package tarballs without the Hex archive.

  `mix hex.build` and `mix deps.get` need Hex (`mix local.hex`), which
  cannot always be installed (no network to hex.pm). Hex makes and opens
  its tarballs with hex_core's `hex_tarball` module; Debian's `rebar3`
  package carries the same module, renamed `r3_hex_tarball`, inside its
  escript. This module loads it from there, so a tarball made here is what
  `mix hex.build` makes from the same files and metadata (format 3: VERSION,
  metadata.config, contents.tar.gz and the CHECKSUM over them), and one
  read here is checked as `mix deps.get` checks it.

  It is repository tooling, used by `mix packetflow.publish --tarball` and
  by the install check (scripts/install-check.sh); the package does not
  ship it.
  """

  # hex_tarball and the modules it calls, as rebar3 names them.
  @modules ~w(r3_hex_tarball r3_hex_erl_tar r3_hex_filename r3_hex_core r3_safe_erl_term)
  # Loaded at run time (load_hex_core!/0), hence called through a variable.
  @hex_tarball :r3_hex_tarball

  @doc """
  Writes the tarball of the package in `dir` (the `files` given, relative
  to it, and `metadata`, a map as `mix hex.build` writes it) to `path`.
  Returns its outer checksum (what hex.pm lists), as lowercase hex.
  """
  @spec create!(map(), Path.t(), [String.t()], Path.t()) :: String.t()
  def create!(metadata, dir, files, path) do
    load_hex_core!()
    contents = for file <- files, do: {String.to_charlist(file), File.read!(Path.join(dir, file))}

    case @hex_tarball.create(metadata, contents) do
      {:ok, %{tarball: tarball, outer_checksum: checksum}} ->
        File.mkdir_p!(Path.dirname(path))
        File.write!(path, tarball)
        Base.encode16(checksum, case: :lower)

      {:error, reason} ->
        Mix.raise("cannot make the Hex tarball: #{@hex_tarball.format_error(reason)}")
    end
  end

  @doc """
  Checks the tarball at `path` (its format and checksum) and unpacks its
  files into `dir`, as `mix deps.get` does into `deps/NAME`. Returns the
  package's metadata.
  """
  @spec unpack!(Path.t(), Path.t()) :: map()
  def unpack!(path, dir) do
    load_hex_core!()

    case @hex_tarball.unpack(File.read!(path), String.to_charlist(dir)) do
      {:ok, %{metadata: metadata}} ->
        metadata

      {:error, reason} ->
        Mix.raise("#{path} is not a valid Hex tarball: #{@hex_tarball.format_error(reason)}")
    end
  end

  defp load_hex_core! do
    unless Code.ensure_loaded?(@hex_tarball) do
      rebar3 =
        System.find_executable("rebar3") ||
          Mix.raise(
            "rebar3 is not on the PATH: Hex tarballs are made and read with the hex_core " <>
              "that Debian's rebar3 package carries (apt-get install rebar3)"
          )

      {:ok, sections} = :escript.extract(String.to_charlist(rebar3), [])
      {:archive, archive} = List.keyfind(sections, :archive, 0)
      wanted = MapSet.new(@modules, &(&1 <> ".beam"))

      {:ok, beams} =
        :zip.extract(archive, [
          :memory,
          file_filter: fn entry -> MapSet.member?(wanted, Path.basename(elem(entry, 1))) end
        ])

      if length(beams) != length(@modules) do
        Mix.raise(
          "#{rebar3} does not carry hex_core's tarball modules (#{Enum.join(@modules, ", ")})"
        )
      end

      for {name, beam} <- beams do
        module = name |> Path.basename(".beam") |> String.to_atom()
        {:module, ^module} = :code.load_binary(module, name, beam)
      end
    end

    :ok
  end
end
