"""One module per `llava-ln` subcommand; each exposes main(argv)."""
