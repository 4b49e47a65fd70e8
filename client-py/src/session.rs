//! Flight sessions from the client side: the `arrow_flight_session_id` cookie kept per
//! connection, and the session messages of Arrow's Flight.proto (arrow-flight 59 lacks them),
//! written out with prost's derive macros.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The cookie that names a Flight session.
pub const COOKIE: &str = "arrow_flight_session_id";

/// The session cookie of one connection, shared by its clones.
#[derive(Clone, Default)]
pub struct SessionCookie(Arc<Mutex<Option<String>>>);

impl SessionCookie {
    /// The `cookie` header to send, if the server started a session.
    pub fn header(&self) -> Option<AsciiMetadataValue> {
        let id = self.lock().clone()?;
        AsciiMetadataValue::try_from(format!("{COOKIE}={id}")).ok()
    }

    /// True while the server keeps a session for this connection.
    pub fn is_set(&self) -> bool {
        self.lock().is_some()
    }

    /// Follows the server's `set-cookie` headers: a new session, or the end of one.
    pub fn update(&self, headers: &MetadataMap) {
        for value in headers.get_all("set-cookie").iter() {
            let Ok(text) = value.to_str() else { continue };
            let mut parts = text.split(';');
            let Some((name, id)) = parts.next().and_then(|pair| pair.split_once('=')) else {
                continue;
            };
            if name.trim() != COOKIE {
                continue;
            }
            let expired = parts.any(|attribute| {
                attribute
                    .trim()
                    .to_ascii_lowercase()
                    .strip_prefix("max-age=")
                    .is_some_and(|age| age.trim().parse::<i64>().is_ok_and(|age| age <= 0))
            });
            let id = id.trim();
            *self.lock() = (!expired && !id.is_empty()).then(|| id.to_string());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `SessionOptionValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionOptionValue {
    #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<OptionValue>,
}

/// `SessionOptionValue.option_value` (variant names as in Flight.proto).
#[allow(clippy::enum_variant_names)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OptionValue {
    #[prost(string, tag = "1")]
    StringValue(String),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(sfixed64, tag = "3")]
    Int64Value(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    StringListValue(StringListValue),
}

/// `SessionOptionValue.StringListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringListValue {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

/// `SetSessionOptionsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// `SetSessionOptionsResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetSessionOptionsError>,
}

/// `SetSessionOptionsResult.Error`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsError {
    /// `ErrorValue`: 1 INVALID_NAME, 2 INVALID_VALUE, 3 ERROR.
    #[prost(int32, tag = "1")]
    pub value: i32,
}

impl SetSessionOptionsError {
    /// The error's name in Flight.proto.
    pub fn name(&self) -> &'static str {
        match self.value {
            1 => "INVALID_NAME",
            2 => "INVALID_VALUE",
            3 => "ERROR",
            _ => "UNSPECIFIED",
        }
    }
}

/// `GetSessionOptionsResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for value in values {
            map.append("set-cookie", value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_cookie_follows_set_cookie() {
        let cookie = SessionCookie::default();
        cookie.update(&headers(&["other=1", &format!("{COOKIE}=abc; Path=/")]));
        assert_eq!(cookie.header().unwrap(), format!("{COOKIE}=abc").as_str());
        cookie.update(&headers(&[&format!("{COOKIE}=abc; Max-Age=0")]));
        assert!(!cookie.is_set());
    }
}
