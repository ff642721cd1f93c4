//! Alerts encoded once for every subscriber: the `SubscribeResponse` bytes of an alert are
//! made by the first stream that sends it and shared (a reference count) by the others,
//! and a codec that writes such bytes as they are.
//!
//! Owns the encoded cache and the Subscribe codec. Why: with ten subscribers, converting
//! and encoding each alert per subscriber was most of the API's CPU; the bytes on the
//! wire are identical, so make them once. The cache is a ring indexed by seq, as large as
//! the live queue: a subscriber within the queue finds its alerts there.

use crate::alert::Alert;
use bytes::{BufMut, Bytes};
use layerguard_proto::v1 as pb;
use prost::Message;
use std::sync::Mutex;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// `SubscribeResponse { alert }` bytes by seq, for the most recent alerts.
pub struct EncodedAlerts {
    slots: Box<[Mutex<(u64, Bytes)>]>,
}

impl EncodedAlerts {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: (0..capacity.max(1))
                .map(|_| Mutex::new((0, Bytes::new())))
                .collect(),
        }
    }

    /// The encoded response for `alert`, made now if no stream made it yet.
    pub fn get(&self, alert: &Alert) -> Bytes {
        let slot = &self.slots[(alert.seq % self.slots.len() as u64) as usize];
        // Encoding under the slot's lock makes the other streams that want the same
        // alert wait a microsecond instead of encoding it again.
        let mut cached = slot.lock().unwrap_or_else(|e| e.into_inner());
        if cached.0 == alert.seq && !cached.1.is_empty() {
            return cached.1.clone();
        }
        let bytes = encode(&pb::SubscribeResponse {
            event: Some(pb::subscribe_response::Event::Alert(pb::Alert::from(alert))),
        });
        *cached = (alert.seq, bytes.clone());
        bytes
    }
}

pub fn encode(msg: &pb::SubscribeResponse) -> Bytes {
    Bytes::from(msg.encode_to_vec())
}

/// Subscribe's codec: requests decoded with prost, responses already encoded.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubscribeCodec;

impl Codec for SubscribeCodec {
    type Encode = Bytes;
    type Decode = pb::SubscribeRequest;
    type Encoder = SubscribeCodec;
    type Decoder = SubscribeCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }
    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for SubscribeCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for SubscribeCodec {
    type Item = pb::SubscribeRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        pb::SubscribeRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("SubscribeRequest: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::full_alert;

    #[test]
    fn an_alert_is_encoded_once_and_decodes_to_the_same_alert() {
        let cache = EncodedAlerts::new(4);
        let a = full_alert(9);
        let first = cache.get(&a);
        let second = cache.get(&a);
        assert_eq!(first.as_ptr(), second.as_ptr(), "shared, not re-encoded");
        let back = pb::SubscribeResponse::decode(first.clone()).unwrap();
        let Some(pb::subscribe_response::Event::Alert(wire)) = back.event else {
            panic!("{back:?}")
        };
        assert_eq!(Alert::try_from(wire).unwrap(), a);
        // Another alert in the same slot replaces it; the first is made again if asked.
        let b = full_alert(13);
        assert_ne!(cache.get(&b), first);
        let again = cache.get(&a);
        assert_ne!(again.as_ptr(), first.as_ptr());
        assert_eq!(again, first);
    }
}
