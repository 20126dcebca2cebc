"""Operations: the `bridge` command, status, logs, metrics, tracking plan, worker supervision."""
