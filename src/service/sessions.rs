//! Flight sessions on this replica: the settings each client session has changed, named by the
//! `arrow_flight_session_id` cookie.
//!
//! A session starts when a client without one first changes a setting (a `SET` statement or
//! SetSessionOptions): the answer carries `set-cookie`, and clients that keep cookies (ADBC,
//! flightbear's own) send it back on every call. Requests without a cookie run with the
//! server's defaults, so clients that never change a setting never hold a session.
//!
//! Sessions are per replica (like running queries): a cookie this replica does not know, has
//! expired, or that belongs to another user is refused with NOT_FOUND rather than silently
//! running with other settings. Their number is bounded (`--max-sessions`: the least recently
//! used session is dropped beyond it) and so is their idle time (`--session-idle-timeout`).
//! Each holds at most a few short settings ([`settings::SETTABLE`], values of at most
//! [`settings::MAX_VALUE_BYTES`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::catalog::TableProvider;
use tonic::metadata::{MetadataMap, MetadataValue};

use super::error::ServiceError;
use super::settings::Settings;

/// The cookie that names a Flight session.
pub const COOKIE: &str = "arrow_flight_session_id";

/// Limits of the session table.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions kept at once.
    pub max_sessions: usize,
    /// How long an unused session is kept.
    pub idle_timeout: Duration,
}

/// The sessions of this replica.
pub struct Sessions {
    limits: SessionLimits,
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    /// The user who started the session (`None` without authentication).
    owner: Option<String>,
    settings: Settings,
    /// Temporary tables (bulk ingest with `temporary`), by name.
    temp: HashMap<String, Arc<dyn TableProvider>>,
    last_used: Instant,
}

/// Most temporary tables one session keeps.
pub const MAX_TEMP_TABLES: usize = 64;

/// The session one request runs in: the one its cookie names, or a new one that is kept only
/// if the request changes a setting.
#[derive(Clone, Debug)]
pub struct Session {
    id: Arc<str>,
    owner: Option<String>,
    /// True when the request named this session with its cookie.
    named: bool,
    /// True once this request has started the session (its answer sets the cookie).
    started: Arc<AtomicBool>,
}

impl Session {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// True when the request named this session with its cookie.
    pub fn is_named(&self) -> bool {
        self.named
    }
}

/// A session cookie this replica cannot serve.
fn unknown(id: &str) -> ServiceError {
    ServiceError::SessionNotFound(format!(
        "session '{id}' is unknown here: sessions end after --session-idle-timeout unused, \
         at CloseSession, when --max-sessions newer ones need the room, or when the server \
         restarts; reconnect to start a new one"
    ))
}

impl Sessions {
    /// An empty session table.
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The session of a request with these headers, run by the current caller. Whether a
    /// named session exists (and is the caller's) is checked when its settings are used: a
    /// request that needs none, such as closing things, works with a stale cookie.
    pub fn for_request(&self, headers: &MetadataMap) -> Session {
        // Idle sessions end even when nobody asks for them: their temporary tables hold memory.
        self.expire(&mut self.lock(), Instant::now());
        let owner = crate::auth::caller().map(|caller| caller.user);
        let Some(id) = session_cookie(headers) else {
            return Session {
                id: uuid::Uuid::new_v4().simple().to_string().into(),
                owner,
                named: false,
                started: Arc::new(AtomicBool::new(false)),
            };
        };
        Session {
            id: id.into(),
            owner,
            named: true,
            started: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The settings of `session` now (none for a session nobody has changed anything in).
    pub fn settings(&self, session: &Session) -> Result<Settings, ServiceError> {
        // Idle sessions were swept when the request began (`for_request`).
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.get_mut(&*session.id) {
            Some(entry) if entry.owner == session.owner => {
                entry.last_used = now;
                Ok(entry.settings.clone())
            }
            Some(_) => Err(unknown(&session.id)),
            None if session.named => Err(unknown(&session.id)),
            None => Ok(Settings::new()),
        }
    }

    /// Sets (`Some`) or removes (`None`) one setting of `session`, starting the session if
    /// this is its first change. The value must have been checked.
    pub fn change(
        &self,
        session: &Session,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.modify(session, value.is_some(), |entry| {
            match value {
                Some(value) => entry.settings.insert(key.to_string(), value.to_string()),
                None => entry.settings.remove(key),
            };
            Ok(())
        })
    }

    /// The temporary table `name` of `session`, if it has one.
    pub fn temp_table(&self, session: &Session, name: &str) -> Option<Arc<dyn TableProvider>> {
        owned(&self.lock(), session)?.temp.get(name).cloned()
    }

    /// The names of `session`'s temporary tables.
    pub fn temp_names(&self, session: &Session) -> Vec<String> {
        owned(&self.lock(), session)
            .map(|entry| entry.temp.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Keeps (`Some`) or drops (`None`) temporary table `name` in `session`, starting the
    /// session if this is its first change.
    pub fn set_temp_table(
        &self,
        session: &Session,
        name: &str,
        table: Option<Arc<dyn TableProvider>>,
    ) -> Result<(), ServiceError> {
        self.modify(session, table.is_some(), |entry| {
            match table {
                Some(table) => {
                    if !entry.temp.contains_key(name) && entry.temp.len() >= MAX_TEMP_TABLES {
                        return Err(ServiceError::Busy(format!(
                            "this session keeps {MAX_TEMP_TABLES} temporary tables, the most \
                             one session may; drop one first"
                        )));
                    }
                    entry.temp.insert(name.to_string(), table);
                }
                None => {
                    entry.temp.remove(name);
                }
            }
            Ok(())
        })
    }

    /// Runs `change` on `session`'s entry; a session that has not started is started first
    /// when `starts` (else there is nothing to change).
    fn modify(
        &self,
        session: &Session,
        starts: bool,
        change: impl FnOnce(&mut Entry) -> Result<(), ServiceError>,
    ) -> Result<(), ServiceError> {
        let now = Instant::now();
        let mut entries = self.lock();
        if !entries.contains_key(&*session.id) {
            if session.named {
                return Err(unknown(&session.id));
            }
            if !starts {
                // Removing something from a session that never started changes nothing.
                return Ok(());
            }
            self.make_room(&mut entries, now)?;
            entries.insert(
                session.id.to_string(),
                Entry {
                    owner: session.owner.clone(),
                    settings: Settings::new(),
                    temp: HashMap::new(),
                    last_used: now,
                },
            );
            session.started.store(true, Ordering::Relaxed);
        }
        let entry = entries
            .get_mut(&*session.id)
            .filter(|entry| entry.owner == session.owner)
            .ok_or_else(|| unknown(&session.id))?;
        entry.last_used = now;
        change(entry)
    }

    /// Ends `session` (CloseSession) if its caller owns it; true if it existed.
    pub fn close(&self, session: &Session) -> bool {
        let mut entries = self.lock();
        owned(&entries, session).is_some() && entries.remove(&*session.id).is_some()
    }

    /// Sessions kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the cookie to an answer: `set-cookie` for a session this request started, and one
    /// that expires the cookie for a session it closed.
    pub fn add_cookie(&self, session: &Session, headers: &mut MetadataMap) {
        let cookie = if session.started.load(Ordering::Relaxed) {
            format!("{COOKIE}={}", session.id)
        } else if session.named && !self.lock().contains_key(&*session.id) {
            format!("{COOKIE}={}; Max-Age=0", session.id)
        } else {
            return;
        };
        // The id is hex: always a valid header value.
        if let Ok(value) = MetadataValue::try_from(cookie) {
            headers.append("set-cookie", value);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere while holding the lock leaves the map itself consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops sessions unused for longer than the idle timeout.
    fn expire(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        let idle = self.limits.idle_timeout;
        entries.retain(|_, entry| now.duration_since(entry.last_used) <= idle);
    }

    /// Makes room for one more session: expired ones go first, then the least recently used.
    fn make_room(
        &self,
        entries: &mut HashMap<String, Entry>,
        now: Instant,
    ) -> Result<(), ServiceError> {
        if self.limits.max_sessions == 0 {
            return Err(ServiceError::Busy(
                "this server keeps no sessions (--max-sessions 0): settings cannot be changed"
                    .into(),
            ));
        }
        self.expire(entries, now);
        while entries.len() >= self.limits.max_sessions {
            let oldest = entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => entries.remove(&id),
                None => break,
            };
        }
        Ok(())
    }
}

/// The entry of `session`, if it exists and belongs to the session's caller.
fn owned<'a>(entries: &'a HashMap<String, Entry>, session: &Session) -> Option<&'a Entry> {
    entries
        .get(&*session.id)
        .filter(|entry| entry.owner == session.owner)
}

/// The session id in a request's `cookie` headers, if any.
fn session_cookie(headers: &MetadataMap) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name.trim() == COOKIE && !value.trim().is_empty()).then(|| value.trim().to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(max_sessions: usize) -> Sessions {
        Sessions::new(SessionLimits {
            max_sessions,
            idle_timeout: Duration::from_secs(60),
        })
    }

    fn with_cookie(cookie: &str) -> MetadataMap {
        let mut headers = MetadataMap::new();
        headers.insert("cookie", cookie.parse().unwrap());
        headers
    }

    fn cookie_of(sessions: &Sessions, session: &Session) -> Option<String> {
        let mut headers = MetadataMap::new();
        sessions.add_cookie(session, &mut headers);
        headers
            .get("set-cookie")
            .map(|value| value.to_str().unwrap().to_string())
    }

    #[test]
    fn a_session_starts_at_its_first_change_and_is_found_by_its_cookie() {
        let table = sessions(10);
        let fresh = table.for_request(&MetadataMap::new());
        assert_eq!(cookie_of(&table, &fresh), None);
        assert!(table.settings(&fresh).unwrap().is_empty());
        assert!(table.is_empty(), "reading does not start a session");
        table.change(&fresh, "k", Some("v")).unwrap();
        let cookie = cookie_of(&table, &fresh).unwrap();
        assert_eq!(cookie, format!("{COOKIE}={}", fresh.id()));

        let again = table.for_request(&with_cookie(&format!("other=1;{cookie}")));
        assert_eq!(again.id(), fresh.id());
        assert_eq!(table.settings(&again).unwrap()["k"], "v");
        assert_eq!(
            cookie_of(&table, &again),
            None,
            "no new cookie for a known session"
        );
        table.change(&again, "k", None).unwrap();
        assert!(table.settings(&again).unwrap().is_empty());

        assert!(table.close(&again));
        assert_eq!(
            cookie_of(&table, &again).unwrap(),
            format!("{COOKIE}={}; Max-Age=0", again.id())
        );
        let closed = table.for_request(&with_cookie(&cookie));
        let err = table.settings(&closed).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(table.change(&closed, "k", Some("v")).is_err());
    }

    #[test]
    fn unknown_cookies_are_refused_and_the_table_is_bounded() {
        let table = sessions(2);
        let forged = table.for_request(&with_cookie(&format!("{COOKIE}=forged")));
        let err = table.settings(&forged).unwrap_err();
        assert!(err.to_string().contains("'forged' is unknown"), "{err}");
        let ids: Vec<Session> = (0..3)
            .map(|_| {
                let session = table.for_request(&MetadataMap::new());
                table.change(&session, "k", Some("v")).unwrap();
                session
            })
            .collect();
        assert_eq!(table.len(), 2);
        assert!(table.settings(&ids[0]).unwrap().is_empty(), "evicted");
        let evicted = with_cookie(&format!("{COOKIE}={}", ids[0].id()));
        assert!(table.settings(&table.for_request(&evicted)).is_err());
        assert_eq!(table.settings(&ids[2]).unwrap()["k"], "v");
    }

    #[test]
    fn idle_sessions_expire() {
        let table = Sessions::new(SessionLimits {
            max_sessions: 10,
            idle_timeout: Duration::ZERO,
        });
        let session = table.for_request(&MetadataMap::new());
        table.change(&session, "k", Some("v")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let cookie = with_cookie(&format!("{COOKIE}={}", session.id()));
        assert!(table.settings(&table.for_request(&cookie)).is_err());
    }
}
