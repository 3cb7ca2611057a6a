# The NIF crate is built by a Mix compiler of this package's own, loaded
# from outside lib/ because lib/ is not compiled yet when compilers run.
Code.require_file("mix/packetflow_nif_compiler.exs", __DIR__)

# `mix packetflow.publish` assembles the Hex package from the repository;
# the package itself does not ship it.
if File.regular?(Path.join(__DIR__, "mix/packetflow_publish.exs")) do
  Code.require_file("mix/packetflow_publish.exs", __DIR__)
end

defmodule PacketFlow.MixProject do
  use Mix.Project

  @version "0.1.0"
  @source_url "https://github.com/packetflow/packetflow"

  def project do
    [
      app: :packetflow,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:packetflow_nif] ++ Mix.compilers(),
      deps: [],
      name: "PacketFlow",
      description:
        "PacketFlow for Elixir: a supervised reactor that routes packets to handlers " <>
          "(Rust core as a NIF; speaks the PacketFlow wire protocol 1.0).",
      source_url: @source_url,
      homepage_url: @source_url,
      package: package(),
      docs: docs()
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end

  # What the Hex tarball holds. `mix packetflow.publish` makes the two
  # vendored paths (the core crate and the pinned Cargo.lock) and, when
  # given one, the prebuilt NIF library (native/prebuilt), which exist only
  # in the package, never in the repository.
  defp package do
    [
      licenses: ["MIT", "Apache-2.0"],
      links: %{"Source" => @source_url},
      files: [
        "lib",
        "mix/packetflow_nif_compiler.exs",
        "native/packetflow_nif/Cargo.toml",
        "native/packetflow_nif/src",
        "native/packetflow_nif/Cargo.lock",
        "native/packetflow_core",
        "native/prebuilt",
        "mix.exs",
        ".formatter.exs",
        "README.md"
      ]
    ]
  end

  defp docs do
    [
      main: "PacketFlow",
      source_ref: "v#{@version}",
      extras: ["README.md"],
      groups_for_modules: [
        Runtime: [PacketFlow.Reactor, PacketFlow.Context],
        Actors: [PacketFlow.Actor, PacketFlow.Actors, PacketFlow.ActorRef],
        Values: [PacketFlow.Result, PacketFlow.Error]
      ]
    ]
  end
end
