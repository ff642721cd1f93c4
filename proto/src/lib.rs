//! The versioned gRPC API of layerguard: `layerguard.v1`.
//!
//! Owns the wire contract only: the protos under `proto/layerguard/v1/`, the code tonic and
//! prost generate from them (clients and server traits), and the encoded file descriptor
//! set for server reflection. Conversions to and from the daemon's own types live in the
//! daemon (`layerguard::api::convert`), so this crate stays free of daemon logic.

/// `layerguard.v1`: AlertService, ContainerService, StatusService, ResponseService,
/// BaselineService and their messages.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("layerguard.v1");

    /// The encoded `FileDescriptorSet` of every `layerguard.v1` proto, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("layerguard_v1_descriptor");

    /// Fully qualified service names, as gRPC paths and the health service spell them.
    pub const ALERT_SERVICE: &str = "layerguard.v1.AlertService";
    pub const CONTAINER_SERVICE: &str = "layerguard.v1.ContainerService";
    pub const STATUS_SERVICE: &str = "layerguard.v1.StatusService";
    pub const RESPONSE_SERVICE: &str = "layerguard.v1.ResponseService";
    pub const BASELINE_SERVICE: &str = "layerguard.v1.BaselineService";
    pub const SERVICES: [&str; 5] = [
        ALERT_SERVICE,
        CONTAINER_SERVICE,
        STATUS_SERVICE,
        RESPONSE_SERVICE,
        BASELINE_SERVICE,
    ];
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_holds_every_service() {
        let set = prost_types::FileDescriptorSet::decode(super::v1::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        for s in super::v1::SERVICES {
            assert!(services.iter().any(|x| x == s), "{s} not in {services:?}");
        }
    }
}
