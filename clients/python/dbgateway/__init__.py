"""Python client for dbgateway, the gRPC database-access gateway.

The generated protobuf and gRPC modules live in :mod:`dbgateway.v1`.
"""

__version__ = "0.1.0"
