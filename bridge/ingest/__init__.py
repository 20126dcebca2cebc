"""The HTTP ingest (`bridge serve`): app and routes, group commit, body limits and parsing, auth, metrics."""
