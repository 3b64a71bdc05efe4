"""Headless subcommands of the `tunetui` CLI (rich output; never textual): add_arguments(parser) and run(args) -> exit code."""
