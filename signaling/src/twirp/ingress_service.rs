//! `livekit.Ingress`: LiveKit's Ingress API (`POST /twirp/livekit.Ingress/<Method>`, the
//! path `livekit-api`'s `ingress` client and the other server SDKs call). Every method
//! needs `ingressAdmin`, as in LiveKit. The registry and the RTMP side are in
//! [`crate::ingress`].

use prism_proto::livekit as lk;
use prost::Message;
use prost_reflect::MethodDescriptor;

use super::codec::{self, Codec};
use super::{Code, TwirpError};
use crate::auth::Claims;
use crate::ingress::{IngressError, Ingresses};

/// The service's full name, as in the path.
pub const SERVICE: &str = "livekit.Ingress";

impl From<IngressError> for TwirpError {
    fn from(e: IngressError) -> Self {
        let code = match &e {
            IngressError::NotFound => Code::NotFound,
            IngressError::Invalid(_) => Code::InvalidArgument,
            IngressError::Unsupported(_) => Code::Unimplemented,
        };
        TwirpError::new(code, e.to_string())
    }
}

/// One Ingress request, authenticated but not yet decoded.
#[derive(Debug)]
pub struct Call<'a> {
    pub ingresses: &'a Ingresses,
    pub claims: &'a Claims,
    pub codec: Codec,
    pub method: &'a MethodDescriptor,
    pub body: &'a [u8],
}

impl Call<'_> {
    fn request<T: Message + Default>(&self) -> Result<T, TwirpError> {
        codec::decode(self.codec, &self.method.input(), self.body)
    }

    fn reply<T: Message>(&self, msg: &T) -> Result<Vec<u8>, TwirpError> {
        codec::encode(self.codec, &self.method.output(), msg)
    }

    /// Runs the method; returns the encoded response.
    pub async fn run(self) -> Result<Vec<u8>, TwirpError> {
        match self.method.name() {
            "CreateIngress" => {
                let req: lk::CreateIngressRequest = self.request()?;
                self.claims.ensure_ingress_admin()?;
                let info = self.ingresses.create(req)?;
                tracing::info!(ingress = %info.ingress_id, room = %info.room_name, input = info.input_type, "ingress created");
                self.reply(&info)
            }
            "UpdateIngress" => {
                let req: lk::UpdateIngressRequest = self.request()?;
                self.claims.ensure_ingress_admin()?;
                self.reply(&self.ingresses.update(req)?)
            }
            "ListIngress" => {
                let req: lk::ListIngressRequest = self.request()?;
                self.claims.ensure_ingress_admin()?;
                let items = self.ingresses.list(&req.room_name, &req.ingress_id);
                self.reply(&lk::ListIngressResponse { items })
            }
            "DeleteIngress" => {
                let req: lk::DeleteIngressRequest = self.request()?;
                self.claims.ensure_ingress_admin()?;
                let info = self.ingresses.delete(&req.ingress_id)?;
                tracing::info!(ingress = %info.ingress_id, "ingress deleted");
                self.reply(&info)
            }
            other => Err(TwirpError::new(
                Code::Unimplemented,
                format!("{SERVICE}/{other} is not implemented"),
            )),
        }
    }
}
