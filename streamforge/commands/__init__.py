"""The command line: `streamforge` and its subcommands."""
