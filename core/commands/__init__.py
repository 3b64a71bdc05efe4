"""Headless subcommands of the `tunetui` CLI: each module has add_arguments(parser) and run(args) -> exit code."""
