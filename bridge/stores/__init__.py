"""What is kept in Redis: every key (keys.py), one module per store, and their in-memory twins."""
