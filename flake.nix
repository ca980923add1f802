# `nix develop`: everything Flotilla's README needs, pinned.
#
# - the Rust toolchain (rust-overlay), with the musl target so `cargo xtask build` makes
#   static musl binaries, plus clippy and rustfmt for `cargo xtask test`;
# - a musl C compiler for ring's C and assembly, wired to cargo through CC_<target> and the
#   target's linker variable;
# - the docker CLI (the engine is the host's), cargo-nextest, and nsenter/nft for
#   `cargo xtask partition` (which needs root on the host);
# - `client` on PATH: `client get-image 123` works from any folder of the checkout.
#
# flake.lock is not committed: the first `nix develop` writes it (commit it to pin inputs).
{
  description = "Flotilla: an edge image cache on a fleet of containers";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, rust-overlay, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = import nixpkgs {
          inherit system;
          overlays = [ (import rust-overlay) ];
        };
        lib = pkgs.lib;

        # x86_64 or aarch64.
        arch = pkgs.stdenv.hostPlatform.parsed.cpu.name;
        muslTarget = "${arch}-unknown-linux-musl";

        # The same toolchain version the project is developed and tested with.
        toolchain = pkgs.rust-bin.stable."1.95.0".default.override {
          extensions = [ "rust-src" "clippy" "rustfmt" ];
          targets = [ muslTarget ];
        };

        # A C compiler that targets musl, for ring (cc-rs reads CC_<target>).
        muslPkgs = if arch == "x86_64"
          then pkgs.pkgsCross.musl64
          else pkgs.pkgsCross.aarch64-multiplatform-musl;
        muslCc = muslPkgs.stdenv.cc;
        muslCcBin = "${muslCc}/bin/${muslCc.targetPrefix}cc";
        targetEnv = lib.toUpper (builtins.replaceStrings [ "-" ] [ "_" ] muslTarget);

        # `client ...` = `cargo client ...` from anywhere in the checkout, against its cluster.
        client = pkgs.writeShellScriptBin "client" ''
          root="''${FLOTILLA_ROOT:?run client inside nix develop}"
          export FLOTILLA_CLUSTER="''${FLOTILLA_CLUSTER:-$root/.cluster}"
          exec cargo run --quiet --manifest-path "$root/Cargo.toml" \
            --package xtask -- client "$@"
        '';
      in
      {
        devShells.default = pkgs.mkShell ({
          packages = [
            toolchain
            muslCc
            pkgs.docker-client
            pkgs.cargo-nextest
            pkgs.util-linux # nsenter
            pkgs.nftables
            pkgs.iproute2 # tc, for netem
            client
          ];

          shellHook = ''
            export FLOTILLA_ROOT="$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
            echo "flotilla: $(rustc --version), musl target ${muslTarget}; try: cargo xtask up 5 && client get-image 123"
          '';
        } // {
          # cc-rs and cargo read these for the musl target only; host builds are untouched.
          "CC_${builtins.replaceStrings [ "-" ] [ "_" ] muslTarget}" = muslCcBin;
          "CARGO_TARGET_${targetEnv}_LINKER" = muslCcBin;
        });
      });
}
