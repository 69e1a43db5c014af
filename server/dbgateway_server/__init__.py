"""dbgateway server: pooled database access behind the dbgateway.v1 gRPC API."""

from dbgateway import __version__

__all__ = ["__version__"]
