"""Development tools of the runtime: synthetic clips, a client, overlays, evaluation.

They serve tests, the demo and benchmarks; the Docker image leaves this package out.
"""
