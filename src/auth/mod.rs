//! Who a caller is: users with argon2 password hashes, signed bearer tokens, and the roles that decide what they may do.
//!
//! Clients log in with HTTP Basic credentials (in the Handshake, or directly on any call) and
//! get a bearer token back in the `authorization` response header, the convention of ADBC,
//! JDBC and pyarrow's `authenticate_basic_token`. Without a users file every caller is
//! [`Identity::anonymous`].

pub mod token;
pub mod users;

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;

pub use token::{TokenError, TokenKey};
pub use users::{Users, UsersError, hash_password};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Query tables and read metadata.
    Reader,
    /// Also change the catalog: register files, create and drop tables and views.
    Admin,
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name (`anonymous` without a users file).
    pub user: String,
    /// What the caller may do.
    pub role: Role,
}

impl Identity {
    /// A logged-in user.
    pub fn user(name: &str, role: Role) -> Self {
        Self {
            user: name.to_string(),
            role,
        }
    }

    /// The caller of a server without users: may do everything the catalog rules allow.
    pub fn anonymous() -> Self {
        Self::user("anonymous", Role::Admin)
    }

    /// True when the caller may change the catalog (DDL).
    pub fn may_change_catalog(&self) -> bool {
        self.role == Role::Admin
    }
}

tokio::task_local! {
    /// The caller of the request being served; `None` outside any request.
    static CALLER: Option<Identity>;
}

/// Runs `work` as `identity` (the server's authentication layer does this for every call).
pub async fn serve_as<F: Future>(identity: Identity, work: F) -> F::Output {
    CALLER.scope(Some(identity), work).await
}

/// The caller of the request being served, `None` outside any request.
pub fn caller() -> Option<Identity> {
    CALLER.try_with(Clone::clone).ok().flatten()
}

/// `work` carrying the current caller along, for work spawned onto other threads or runtimes.
pub fn with_caller<F: Future>(work: F) -> impl Future<Output = F::Output> {
    CALLER.scope(caller(), work)
}

/// A token issued by a successful Handshake, put in the request's extensions so the
/// Handshake answer can carry it in its payload too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken(pub String);

/// Credentials as sent in an `authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Bearer <token>`.
    Bearer(String),
}

/// Why a caller is not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header.
    #[error(
        "authentication required: log in with a user name and password (HTTP Basic) or send a bearer token"
    )]
    Missing,
    /// A header that is neither Basic nor Bearer, or badly encoded.
    #[error("malformed authorization header: {0}")]
    Malformed(&'static str),
    /// Wrong user or password (which one is not said).
    #[error("invalid user name or password")]
    BadPassword,
    /// The token is not valid.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token names a user that no longer exists.
    #[error("the bearer token's user no longer exists")]
    UnknownUser,
}

/// Basic credentials are decoded whether or not the client padded the base64.
const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Credentials {
    /// Reads an `authorization` header value.
    pub fn parse(header: &str) -> Result<Self, AuthError> {
        let (scheme, value) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthError::Malformed("expected 'Basic …' or 'Bearer …'"))?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Self::Bearer(value.to_string()));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(AuthError::Malformed("expected 'Basic …' or 'Bearer …'"));
        }
        let decoded = BASE64_ANY_PADDING
            .decode(value)
            .map_err(|_| AuthError::Malformed("Basic credentials are not base64"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8"))?;
        let (user, password) = text
            .split_once(':')
            .ok_or(AuthError::Malformed("Basic credentials lack a ':'"))?;
        Ok(Self::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
}

/// Checks credentials and issues tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    users: Users,
    key: TokenKey,
    ttl: Duration,
}

impl Authenticator {
    /// Users from `users`, tokens signed with `key`, valid for `ttl`.
    pub fn new(users: Users, key: TokenKey, ttl: Duration) -> Self {
        Self { users, key, ttl }
    }

    /// Checks a user name and password; slow on purpose (argon2), so call it off the async runtime.
    pub fn check_password(&self, user: &str, password: &str) -> Result<Identity, AuthError> {
        self.users
            .verify(user, password)
            .ok_or(AuthError::BadPassword)
    }

    /// Checks a bearer token; the role is the user's current one.
    pub fn check_token(&self, token: &str) -> Result<Identity, AuthError> {
        let user = self.key.verify(token)?;
        let role = self.users.role_of(&user).ok_or(AuthError::UnknownUser)?;
        Ok(Identity::user(&user, role))
    }

    /// A fresh token for a logged-in caller.
    pub fn issue(&self, identity: &Identity) -> String {
        self.key.issue(&identity.user, self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_caller_follows_the_request_onto_spawned_work() {
        assert_eq!(caller(), None);
        let reader = Identity::user("rex", Role::Reader);
        let seen = serve_as(reader.clone(), async {
            tokio::spawn(with_caller(async { caller() })).await.unwrap()
        })
        .await;
        assert_eq!(seen, Some(reader));
        // Spawned without carrying it, the work has no caller (and is refused catalog changes).
        let lost = serve_as(Identity::anonymous(), async {
            tokio::spawn(async { caller() }).await.unwrap()
        })
        .await;
        assert_eq!(lost, None);
    }

    #[test]
    fn basic_credentials_decode_with_and_without_padding() {
        // "ada:pw" is 6 bytes: base64 "YWRhOnB3" has no padding; "ada:pwd" needs one '='.
        for header in [
            "Basic YWRhOnB3ZA==",
            "Basic YWRhOnB3ZA",
            "basic   YWRhOnB3ZA==",
        ] {
            assert_eq!(
                Credentials::parse(header),
                Ok(Credentials::Basic {
                    user: "ada".into(),
                    password: "pwd".into()
                }),
                "{header}"
            );
        }
        assert_eq!(
            Credentials::parse("Bearer abc.def.ghi"),
            Ok(Credentials::Bearer("abc.def.ghi".into()))
        );
        for bad in ["", "Basic", "Digest x", "Basic !!!", "Basic YWRh"] {
            assert!(Credentials::parse(bad).is_err(), "{bad}");
        }
    }
}
