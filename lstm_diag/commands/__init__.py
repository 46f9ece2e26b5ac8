"""One module per CLI command. Each imports only click at module level, so that
`lstm-diag --help` stays fast; the work is imported inside the command."""
