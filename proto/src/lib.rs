//! The versioned gRPC API of layerguard (`layerguard.v1`); the services arrive with the gRPC issue.
