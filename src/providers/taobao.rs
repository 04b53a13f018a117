//! Taobao TOP `taobao.logistics.trace.search`.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use sha2::Sha256;

/// How a TOP request is signed (`sign_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum SignMethod {
    Md5,
    Hmac,
    #[default]
    HmacSha256,
}

impl SignMethod {
    pub const ALL: [SignMethod; 3] = [SignMethod::Md5, SignMethod::Hmac, SignMethod::HmacSha256];

    /// The name TOP expects in the `sign_method` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            SignMethod::Md5 => "md5",
            SignMethod::Hmac => "hmac",
            SignMethod::HmacSha256 => "hmac-sha256",
        }
    }
}

impl fmt::Display for SignMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sign_method {0:?}: expected md5, hmac or hmac-sha256")]
pub struct UnknownSignMethod(pub String);

impl FromStr for SignMethod {
    type Err = UnknownSignMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignMethod::ALL
            .into_iter()
            .find(|method| method.as_str() == s)
            .ok_or_else(|| UnknownSignMethod(s.to_owned()))
    }
}

// Routing serde through FromStr keeps config errors worded the same as CLI errors.
impl TryFrom<String> for SignMethod {
    type Error = UnknownSignMethod;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// Signs TOP request parameters: every pair but `sign`, sorted by key in byte order, pairs with an
/// empty key or value left out, concatenated as `key+value`, digested, uppercase hex.
pub fn sign(params: &[(&str, &str)], secret: &str, method: SignMethod) -> String {
    let mut pairs: Vec<&(&str, &str)> = params
        .iter()
        .filter(|(key, value)| *key != "sign" && !key.is_empty() && !value.is_empty())
        .collect();
    // Stable, so duplicate keys (which TOP never sends) at least sign deterministically.
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut text = String::new();
    for (key, value) in pairs {
        text.push_str(key);
        text.push_str(value);
    }
    let digest = match method {
        SignMethod::Md5 => {
            let mut hasher = Md5::new();
            hasher.update(secret.as_bytes());
            hasher.update(text.as_bytes());
            hasher.update(secret.as_bytes());
            hasher.finalize().to_vec()
        }
        SignMethod::Hmac => {
            let mut mac = Hmac::<Md5>::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(text.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        SignMethod::HmacSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(text.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    hex::encode_upper(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE_PARAMS: [(&str, &str); 7] = [
        ("app_key", "12345678"),
        ("format", "json"),
        ("method", "taobao.logistics.trace.search"),
        ("session", "test"),
        ("tid", "1234567890123456789"),
        ("timestamp", "2016-01-01 12:00:00"),
        ("v", "2.0"),
    ];

    fn with_method(method: SignMethod) -> Vec<(&'static str, &'static str)> {
        let mut params = TRACE_PARAMS.to_vec();
        params.push(("sign_method", method.as_str()));
        params
    }

    #[test]
    fn md5_vector_from_the_platform_docs() {
        let params = [
            ("app_key", "12345678"),
            ("fields", "num_iid,title,nick,price,num"),
            ("format", "json"),
            ("method", "taobao.item.seller.get"),
            ("num_iid", "11223344"),
            ("session", "test"),
            ("sign_method", "md5"),
            ("timestamp", "2016-01-01 12:00:00"),
            ("v", "2.0"),
        ];
        assert_eq!(
            sign(&params, "helloworld", SignMethod::Md5),
            "66987CB115214E59E6EC978214934FB8"
        );
    }

    #[test]
    fn hmac_sha256_vector() {
        let params = with_method(SignMethod::HmacSha256);
        assert_eq!(
            sign(&params, "helloworld", SignMethod::HmacSha256),
            "2B67FC79B6AB2D6CE18E38A75995A2B1995D78994AB258C57E16897304966D6C"
        );
    }

    #[test]
    fn hmac_md5_vector() {
        let params = with_method(SignMethod::Hmac);
        assert_eq!(
            sign(&params, "helloworld", SignMethod::Hmac),
            "D54CB27172A9295719B4B736D956FF64"
        );
    }

    #[test]
    fn order_sign_and_empty_pairs_do_not_change_the_signature() {
        let params = with_method(SignMethod::HmacSha256);
        let expected = sign(&params, "helloworld", SignMethod::HmacSha256);
        let mut shuffled: Vec<_> = params.iter().rev().copied().collect();
        shuffled.push(("sign", "WHATEVER"));
        shuffled.push(("is_split", ""));
        shuffled.push(("", "orphan"));
        assert_eq!(
            sign(&shuffled, "helloworld", SignMethod::HmacSha256),
            expected
        );
    }

    #[test]
    fn sign_method_names_round_trip() {
        for method in SignMethod::ALL {
            assert_eq!(method.as_str().parse::<SignMethod>().unwrap(), method);
            let json = format!("\"{}\"", method.as_str());
            assert_eq!(serde_json::from_str::<SignMethod>(&json).unwrap(), method);
        }
        assert_eq!(SignMethod::default(), SignMethod::HmacSha256);
    }

    #[test]
    fn unknown_sign_method_names_the_value_and_the_choices() {
        let err = "sha1".parse::<SignMethod>().unwrap_err().to_string();
        assert!(err.contains("\"sha1\""), "{err}");
        assert!(err.contains("md5, hmac or hmac-sha256"), "{err}");
        let err = serde_json::from_str::<SignMethod>("\"HMAC\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"HMAC\"") && err.contains("hmac-sha256"),
            "{err}"
        );
    }
}
