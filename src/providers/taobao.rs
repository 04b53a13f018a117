//! Taobao TOP `taobao.logistics.trace.search`.
// Placeholder until the adapter lands; same public surface.
use crate::domain::Secret;
pub const DEFAULT_ENDPOINT: &str = "https://eco.taobao.com/router/rest";
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum SignMethod {
    Md5,
    Hmac,
    #[default]
    HmacSha256,
}
impl SignMethod {
    pub fn as_str(self) -> &'static str {
        "hmac-sha256"
    }
}
impl std::str::FromStr for SignMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "md5" => Ok(Self::Md5),
            "hmac" => Ok(Self::Hmac),
            "hmac-sha256" => Ok(Self::HmacSha256),
            _ => Err(format!("bad sign method {s}")),
        }
    }
}
#[derive(Debug, Clone)]
pub struct TaobaoConfig {
    pub endpoint: String,
    pub app_key: String,
    pub app_secret: Secret,
    pub session: Secret,
    pub sign_method: SignMethod,
}
pub struct Taobao;
impl Taobao {
    pub fn new(_c: TaobaoConfig, _h: reqwest::Client) -> Self {
        Taobao
    }
}
#[async_trait::async_trait]
impl super::Provider for Taobao {
    fn kind(&self) -> &'static str {
        "taobao"
    }
    async fn fetch(&self, _r: &super::TrackRequest) -> Result<super::Trace, super::ProviderError> {
        unimplemented!()
    }
}
