"""The domain: outcome models and scalars, errors, Segment's rules and wire form. Imports nothing of Redis, HTTP or Celery."""
