//! The `layerguard.v1.AlertService` server, written out instead of generated: Subscribe
//! sends alerts encoded once for all streams ([`super::wire`]), which the generated server
//! cannot (its codec encodes each message per stream). List is the generated shape.
//!
//! Owns routing the two methods to [`AlertApi`]; the wire contract is still the proto's,
//! so every client (grpcurl, generated stubs) sees an ordinary AlertService.

use super::alerts::{AlertApi, AlertStream};
use super::wire::SubscribeCodec;
use layerguard_proto::v1 as pb;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};

pub const SUBSCRIBE: &str = "/layerguard.v1.AlertService/Subscribe";
pub const LIST: &str = "/layerguard.v1.AlertService/List";

#[derive(Clone)]
pub struct AlertServer {
    api: Arc<AlertApi>,
}

impl AlertServer {
    pub fn new(api: AlertApi) -> Self {
        Self { api: Arc::new(api) }
    }
}

impl NamedService for AlertServer {
    const NAME: &'static str = pb::ALERT_SERVICE;
}

struct Subscribe(Arc<AlertApi>);

impl ServerStreamingService<pb::SubscribeRequest> for Subscribe {
    type Response = bytes::Bytes;
    type ResponseStream = AlertStream;
    type Future = BoxFuture<Response<AlertStream>, Status>;

    fn call(&mut self, request: Request<pb::SubscribeRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.subscribe(request).await })
    }
}

struct List(Arc<AlertApi>);

impl UnaryService<pb::ListAlertsRequest> for List {
    type Response = pb::ListAlertsResponse;
    type Future = BoxFuture<Response<pb::ListAlertsResponse>, Status>;

    fn call(&mut self, request: Request<pb::ListAlertsRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.list(request).await })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for AlertServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let api = self.api.clone();
        match req.uri().path() {
            SUBSCRIBE => Box::pin(async move {
                Ok(Grpc::new(SubscribeCodec)
                    .server_streaming(Subscribe(api), req)
                    .await)
            }),
            LIST => Box::pin(async move {
                Ok(Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(List(api), req)
                    .await)
            }),
            _ => Box::pin(async move {
                Ok(
                    Status::unimplemented("no such method in layerguard.v1.AlertService")
                        .into_http(),
                )
            }),
        }
    }
}
