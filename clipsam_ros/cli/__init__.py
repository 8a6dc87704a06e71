"""`clipsam-ros`: one module per subcommand; `main` builds the parser."""
