defmodule DemoService.MixProject do
  use Mix.Project

  def project do
    [app: :demo_service, version: "0.1.0", elixir: "~> 1.14", deps: [{:packetflow, path: "../../bindings-elixir"}]]
  end

  def application, do: [extra_applications: [:logger]]
end
