"""Backends over model servers (llama.cpp's llama-server) and the build of llama-server itself."""
