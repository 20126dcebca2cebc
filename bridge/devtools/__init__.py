"""Developer tools, not on the production path: the local Segment-compatible collector and the demo."""
