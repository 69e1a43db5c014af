"""Thin gRPC servicers: validate the request, call the gateway core, map the result."""
