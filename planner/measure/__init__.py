"""Measurements on the real machine: llama.cpp runs on llama-server, OpenAI-compatible endpoints, host probes.

Everything here is at the edge (it runs engines and reads clocks); the estimator never imports it.
"""
