//! Bearer tokens: HS256-signed JWTs naming the user and when the token expires.
//!
//! Replicas configured with the same secret accept each other's tokens, so tickets and
//! tokens both stay free of server-side state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The only header flightbear issues and accepts: HS256, a JWT.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or not the JSON we issue.
    #[error("the bearer token is malformed")]
    Malformed,
    /// Not signed with this server's secret (or changed since).
    #[error("the bearer token's signature is invalid")]
    BadSignature,
    /// Past its expiry time.
    #[error("the bearer token has expired; log in again")]
    Expired,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user name.
    sub: String,
    /// Issued at (seconds since the epoch).
    iat: u64,
    /// Expires at (seconds since the epoch).
    exp: u64,
}

/// The key that signs and checks tokens.
#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from a configured secret (shared by every replica that should accept the tokens).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    /// A random key: tokens are only valid on this process, until it restarts.
    pub fn random() -> Self {
        let mut secret = Vec::with_capacity(32);
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self { secret }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!())
    }

    /// A token for `user`, valid for `ttl`.
    pub fn issue(&self, user: &str, ttl: Duration) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
        };
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The user a token was issued to, if it is ours, intact and not expired.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        // Only now, with the signature checked, is the content trusted.
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        if header != HEADER.as_bytes() {
            return Err(TokenError::Malformed);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now_secs() {
            return Err(TokenError::Expired);
        }
        Ok(claims.sub)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_other_keys_reject_them() {
        let key = TokenKey::new(b"lab secret");
        let token = key.issue("ada", Duration::from_secs(60));
        assert_eq!(key.verify(&token), Ok("ada".to_string()));
        // Another replica with the same secret accepts it; one with another secret does not.
        assert_eq!(
            TokenKey::new(b"lab secret").verify(&token),
            Ok("ada".into())
        );
        assert_eq!(
            TokenKey::random().verify(&token),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_expired_and_garbage_tokens_are_refused() {
        let key = TokenKey::new(b"lab secret");
        let token = key.issue("rex", Duration::from_secs(60));
        let (head, rest) = token.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap())
                .unwrap()
                .replace("rex", "ada"),
        );
        let forged = format!("{head}.{forged_payload}.{signature}");
        assert_eq!(key.verify(&forged), Err(TokenError::BadSignature));
        let expired = key.issue("rex", Duration::ZERO);
        assert_eq!(key.verify(&expired), Err(TokenError::Expired));
        for garbage in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(key.verify(garbage).is_err(), "{garbage}");
        }
        // alg=none tricks fail on the signature before the header is even read.
        let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(key.verify(&none), Err(TokenError::BadSignature));
    }
}
