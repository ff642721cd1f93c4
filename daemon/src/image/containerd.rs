//! containerd as a content store: blobs through Content.Read, image names through Images.Get,
//! and the set of layers the node's images use (for cache eviction) through Namespaces.List
//! and Images.List.
//!
//! Owns: which calls the content store makes and what their failures mean (`ContentError`).
//! The connection, namespace header and deadlines are `crate::containerd`'s. It trusts
//! nothing it receives: the indexer verifies every byte.

use std::collections::HashSet;

use containerd_client::services::v1::{
    GetImageRequest, ListImagesRequest, ListNamespacesRequest, ReadContentRequest,
};
use containerd_client::tonic::Request;
use tokio::sync::mpsc;

use super::content::{Blob, ContentError, ContentStore, CHUNK_QUEUE_DEPTH};
use super::digest::Digest;
use super::oci::{parse_index, parse_manifest, Descriptor, MediaKind, MAX_METADATA_BLOB_BYTES};
use crate::containerd::{request, Connection, Containerd, ContainerdError};

/// containerd's content store in one namespace, over one connection.
#[derive(Clone)]
pub struct ContainerdStore {
    conn: Connection,
    namespace: String,
}

fn unavailable(e: ContainerdError) -> ContentError {
    ContentError::Unavailable {
        message: e.to_string(),
    }
}

impl ContainerdStore {
    /// Connects to containerd for `namespace`.
    pub async fn connect(containerd: &Containerd, namespace: &str) -> Result<Self, ContentError> {
        let conn = containerd.connect().await.map_err(unavailable)?;
        Ok(Self {
            conn,
            namespace: namespace.to_string(),
        })
    }

    /// The namespace it reads in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The same connection, another namespace.
    pub fn in_namespace(&self, namespace: &str) -> Self {
        Self {
            conn: self.conn.clone(),
            namespace: namespace.to_string(),
        }
    }

    /// Finds an image by name and returns the name it is stored under and its target. Tries
    /// the name as given, then its Docker-normalized form (`alpine` ->
    /// `docker.io/library/alpine:latest`), as `ctr` and the CRI store names.
    pub async fn resolve(&self, reference: &str) -> Result<(String, Descriptor), ContentError> {
        let mut candidates = vec![reference.to_string()];
        let normalized = docker_normalize(reference);
        if normalized != reference {
            candidates.push(normalized);
        }
        for name in candidates {
            let Some(image) = self.image_record(&name).await? else {
                continue;
            };
            let target = image.target.ok_or_else(|| ContentError::BadImageRecord {
                reference: name.clone(),
                detail: "no target".into(),
            })?;
            let descriptor = descriptor_from_proto(&name, target)?;
            return Ok((image.name, descriptor));
        }
        Err(ContentError::ImageNotFound {
            reference: reference.to_string(),
            namespace: self.namespace.clone(),
        })
    }

    /// The image record named exactly `name`, `None` when there is none.
    async fn image_record(
        &self,
        name: &str,
    ) -> Result<Option<containerd_client::services::v1::Image>, ContentError> {
        let mut images = self.conn.client().images();
        let req = request(
            GetImageRequest {
                name: name.to_string(),
            },
            &self.namespace,
        )
        .map_err(unavailable)?;
        match self.conn.call("Images.Get", images.get(req)).await {
            Ok(response) => response
                .image
                .map(Some)
                .ok_or_else(|| ContentError::BadImageRecord {
                    reference: name.to_string(),
                    detail: "no image in response".into(),
                }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Every image record of the namespace: its name and target. Records whose target is
    /// malformed are left out.
    pub async fn list_images(&self) -> Result<Vec<(String, Descriptor)>, ContentError> {
        let mut images = self.conn.client().images();
        let req =
            request(ListImagesRequest::default(), self.namespace.as_str()).map_err(unavailable)?;
        let list = self
            .conn
            .call("Images.List", images.list(req))
            .await
            .map_err(unavailable)?;
        Ok(list
            .images
            .into_iter()
            .filter_map(|i| {
                let target = descriptor_from_proto(&i.name, i.target?).ok()?;
                Some((i.name, target))
            })
            .collect())
    }

    /// The target of the image record named exactly `name`, `None` when there is none.
    pub async fn image_target(&self, name: &str) -> Result<Option<Descriptor>, ContentError> {
        // A record without an image or a target names no signature: nothing to read.
        match self.image_record(name).await {
            Ok(Some(image)) => match image.target {
                Some(t) => descriptor_from_proto(name, t).map(Some),
                None => Ok(None),
            },
            Ok(None) | Err(ContentError::BadImageRecord { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every layer blob referenced by any image in any namespace (all platforms of an index
    /// whose manifests are present). Used to decide what the layer cache may evict.
    pub async fn layers_in_use(&self) -> Result<HashSet<Digest>, ContentError> {
        let mut namespaces = self.conn.client().namespaces();
        let listed = self
            .conn
            .call(
                "Namespaces.List",
                namespaces.list(Request::new(ListNamespacesRequest::default())),
            )
            .await
            .map_err(unavailable)?;
        let mut in_use = HashSet::new();
        for namespace in listed.namespaces {
            let store = self.in_namespace(&namespace.name);
            let mut images = self.conn.client().images();
            let req = request(ListImagesRequest::default(), namespace.name.as_str())
                .map_err(unavailable)?;
            let list = self
                .conn
                .call("Images.List", images.list(req))
                .await
                .map_err(unavailable)?;
            for image in list.images {
                let Some(target) = image.target else { continue };
                let Ok(target) = descriptor_from_proto(&image.name, target) else {
                    continue;
                };
                store.collect_layers(target, &mut in_use).await?;
            }
        }
        Ok(in_use)
    }

    /// Adds the layers reachable from `target` to `out`. Unreadable or unparsable blobs are
    /// skipped: their layers were never indexed from this node's store anyway.
    async fn collect_layers(
        &self,
        target: Descriptor,
        out: &mut HashSet<Digest>,
    ) -> Result<(), ContentError> {
        let mut pending = vec![(target, 0usize)];
        while let Some((desc, depth)) = pending.pop() {
            if depth > super::indexer::MAX_INDEX_DEPTH || desc.size > MAX_METADATA_BLOB_BYTES {
                continue;
            }
            let bytes = match self.open(desc.digest).await {
                Ok(blob) => match blob.read_to_vec(MAX_METADATA_BLOB_BYTES).await {
                    Ok(bytes) if Digest::of(&bytes) == desc.digest => bytes,
                    Ok(_)
                    | Err(ContentError::NotFound { .. })
                    | Err(ContentError::TooLarge { .. }) => continue,
                    Err(e) => return Err(e),
                },
                Err(ContentError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            match MediaKind::of(&desc.media_type) {
                MediaKind::Index => {
                    if let Ok(index) = parse_index(&bytes, &desc) {
                        pending.extend(index.manifests.into_iter().map(|m| (m, depth + 1)));
                    }
                }
                MediaKind::Manifest => {
                    if let Ok(manifest) = parse_manifest(&bytes, &desc) {
                        out.extend(manifest.layers.iter().map(|l| l.digest));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn descriptor_from_proto(
    reference: &str,
    target: containerd_client::types::Descriptor,
) -> Result<Descriptor, ContentError> {
    let bad = |detail: String| ContentError::BadImageRecord {
        reference: reference.to_string(),
        detail,
    };
    Ok(Descriptor {
        digest: Digest::parse(&target.digest).map_err(|e| bad(e.to_string()))?,
        size: u64::try_from(target.size)
            .map_err(|_| bad(format!("negative size {}", target.size)))?,
        media_type: target.media_type,
        platform: None,
    })
}

/// Docker's reference normalization: a bare name lives in `docker.io/library`, a name without a
/// registry host in `docker.io`, and a missing tag is `latest`.
pub fn docker_normalize(reference: &str) -> String {
    let (first, _) = reference.split_once('/').unwrap_or(("", reference));
    let has_host = first.contains('.') || first.contains(':') || first == "localhost";
    let mut name = if !reference.contains('/') {
        format!("docker.io/library/{reference}")
    } else if has_host {
        reference.to_string()
    } else {
        format!("docker.io/{reference}")
    };
    let last = name.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !name.contains('@') {
        name.push_str(":latest");
    }
    name
}

impl ContentStore for ContainerdStore {
    async fn open(&self, digest: Digest) -> Result<Blob, ContentError> {
        let mut content = self.conn.client().content();
        let req = request(
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            self.namespace.as_str(),
        )
        .map_err(unavailable)?;
        let map = move |e: ContainerdError| {
            if e.is_not_found() {
                ContentError::NotFound { digest }
            } else if matches!(e, ContainerdError::Timeout { .. }) {
                unavailable(e)
            } else {
                ContentError::Read {
                    digest,
                    message: e.to_string(),
                }
            }
        };
        let mut stream = self
            .conn
            .call("Content.Read", content.read(req))
            .await
            .map_err(map)?;
        // Read the first chunk here so a missing blob is reported by `open`, not mid-stream.
        let first = self
            .conn
            .next("Content.Read", &mut stream)
            .await
            .map_err(map)?;
        let (tx, rx) = mpsc::channel(CHUNK_QUEUE_DEPTH);
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let Some(first) = first else { return };
            if tx.send(Ok(first.data)).await.is_err() {
                return;
            }
            loop {
                let next = match conn.next("Content.Read", &mut stream).await {
                    Err(e) => Err(map(e)),
                    Ok(None) => return,
                    Ok(Some(response)) => Ok(response.data),
                };
                let failed = next.is_err();
                if tx.send(next).await.is_err() || failed {
                    return; // consumer gone, or the error was the last word
                }
            }
        });
        Ok(Blob::from_channel(digest, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_are_normalized() {
        assert_eq!(
            docker_normalize("alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(docker_normalize("alpine:3"), "docker.io/library/alpine:3");
        assert_eq!(docker_normalize("me/app"), "docker.io/me/app:latest");
        assert_eq!(docker_normalize("reg.io/me/app:1"), "reg.io/me/app:1");
        assert_eq!(
            docker_normalize("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            docker_normalize("localhost/app@sha256:00"),
            "localhost/app@sha256:00"
        );
    }
}
