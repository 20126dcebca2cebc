"""The pipeline's stages as plain functions over injected stores: prepare, accept, process, deliver, replay."""
