defmodule PfElixir.MixProject do
  use Mix.Project

  def project do
    [app: :pf_elixir, version: "0.1.0", elixir: "~> 1.14", deps: [{:packetflow, path: "../../../bindings-elixir"}]]
  end

  def application, do: [extra_applications: [:logger]]
end
