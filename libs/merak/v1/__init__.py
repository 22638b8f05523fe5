"""Generated protobuf and gRPC code (`make proto`); not committed."""
