"""Delivery to Segment: the policy (status table, backoff, Retry-After) and the HTTP sending."""
