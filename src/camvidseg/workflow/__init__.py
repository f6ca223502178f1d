"""Workflow support the Snakefile imports while it parses, and the GPU lease wrapper."""
