//! The Flight session actions (SetSessionOptions, GetSessionOptions, CloseSession) and `SET`/`RESET`
//! statements: what they change in a client's [`Session`](super::sessions::Session).
//!
//! Session options are the session's settings: `catalog` and `schema` (what ADBC's current
//! catalog and schema options set) stand for `datafusion.catalog.default_catalog` and
//! `datafusion.catalog.default_schema`; every other option is named by its DataFusion key and
//! must be one of [`SETTABLE`](super::settings::SETTABLE).

use std::collections::BTreeMap;

use datafusion::prelude::SessionContext;

use super::FlightbearService;
use super::error::ServiceError;
use super::sessions::Session;
use super::settings::{self, CATALOG, Change, SCHEMA, SettingError, Settings};
use crate::flight_session::close_session_result::Status as CloseStatus;
use crate::flight_session::session_option_value::OptionValue;
use crate::flight_session::set_session_options_result::{Error as OptionError, ErrorValue};
use crate::flight_session::{
    CloseSessionResult, GetSessionOptionsResult, SessionOptionValue, SetSessionOptionsRequest,
    SetSessionOptionsResult,
};

/// The configuration key a session option name stands for.
fn option_key(name: &str) -> &str {
    match name {
        "catalog" => CATALOG,
        "schema" => SCHEMA,
        other => other,
    }
}

/// The session option name of a configuration key (the inverse of [`option_key`]).
fn option_name(key: &str) -> &str {
    match key {
        CATALOG => "catalog",
        SCHEMA => "schema",
        other => other,
    }
}

/// A session option value as setting text; `Err` for a list, which no setting takes.
fn option_text(value: OptionValue) -> Result<String, ()> {
    Ok(match value {
        OptionValue::StringValue(text) => text,
        OptionValue::BoolValue(flag) => flag.to_string(),
        OptionValue::Int64Value(number) => number.to_string(),
        OptionValue::DoubleValue(number) => number.to_string(),
        OptionValue::StringListValue(_) => return Err(()),
    })
}

fn text_value(text: &str) -> SessionOptionValue {
    SessionOptionValue {
        option_value: Some(OptionValue::StringValue(text.to_string())),
    }
}

impl FlightbearService {
    /// The context a session's settings give, for checking changes against.
    fn session_context(&self, session: &Session) -> Result<SessionContext, ServiceError> {
        let settings = self.sessions.settings(session)?;
        self.planner.request_context(&settings)
    }

    /// The settings a request runs with: its session's, if it named one with its cookie;
    /// otherwise those its handle carries (`carried`).
    pub(super) fn settings_for(
        &self,
        session: &Session,
        carried: Settings,
    ) -> Result<Settings, ServiceError> {
        if session.is_named() {
            self.sessions.settings(session)
        } else {
            Ok(carried)
        }
    }

    /// Runs a `SET` or `RESET` statement: checks the change against the session as it is
    /// (`ctx`), then keeps it for the rest of the session.
    pub(super) fn change_setting(
        &self,
        session: &Session,
        ctx: &SessionContext,
        change: Change,
    ) -> Result<(), ServiceError> {
        match &change.value {
            Some(value) => settings::check(ctx, &change.key, value)?,
            None => settings::check_key(&change.key)?,
        }
        self.sessions
            .change(session, &change.key, change.value.as_deref())
    }

    /// Action SetSessionOptions: sets the options it can, and names the ones it cannot.
    pub(super) fn set_session_options(
        &self,
        session: &Session,
        request: SetSessionOptionsRequest,
    ) -> Result<SetSessionOptionsResult, ServiceError> {
        let ctx = self.session_context(session)?;
        // In key order, so the catalog is set before the schema that must exist in it.
        let mut options: Vec<(String, Option<OptionValue>)> = request
            .session_options
            .into_iter()
            .map(|(name, value)| (name, value.option_value))
            .collect();
        options.sort_by(|(a, _), (b, _)| option_key(a).cmp(option_key(b)));
        let mut errors = BTreeMap::new();
        for (name, value) in options {
            let key = option_key(&name).to_string();
            let checked = match value.map(option_text) {
                None => settings::check_key(&key).map(|()| None),
                Some(Ok(text)) => settings::check(&ctx, &key, &text).map(|()| Some(text)),
                Some(Err(())) => Err(SettingError::InvalidValue {
                    key: key.clone(),
                    reason: "no setting takes a list of strings".into(),
                }),
            };
            match checked {
                Ok(value) => {
                    self.sessions.change(session, &key, value.as_deref())?;
                    if let Some(value) = value {
                        // Later options are checked against this one (a schema in a catalog).
                        settings::apply(&ctx, &Settings::from([(key, value)]))?;
                    }
                }
                Err(error) => {
                    tracing::info!(option = %name, %error, "session option not set");
                    let value = match error {
                        SettingError::InvalidValue { .. } => ErrorValue::InvalidValue,
                        SettingError::NotSettable(_) | SettingError::Unknown(_) => {
                            ErrorValue::InvalidName
                        }
                    };
                    errors.insert(
                        name,
                        OptionError {
                            value: value.into(),
                        },
                    );
                }
            }
        }
        Ok(SetSessionOptionsResult { errors })
    }

    /// Action GetSessionOptions: the session's current catalog and schema (defaults included)
    /// and every other setting it has changed.
    pub(super) fn get_session_options(
        &self,
        session: &Session,
    ) -> Result<GetSessionOptionsResult, ServiceError> {
        let settings = self.sessions.settings(session)?;
        let ctx = self.planner.request_context(&settings)?;
        let state = ctx.state();
        let catalog = &state.config_options().catalog;
        let mut options: BTreeMap<String, SessionOptionValue> = settings
            .iter()
            .map(|(key, value)| (option_name(key).to_string(), text_value(value)))
            .collect();
        options.insert("catalog".into(), text_value(&catalog.default_catalog));
        options.insert("schema".into(), text_value(&catalog.default_schema));
        Ok(GetSessionOptionsResult {
            session_options: options,
        })
    }

    /// Action CloseSession: forgets the session (closing one that is already gone is fine).
    pub(super) fn close_session(&self, session: &Session) -> CloseSessionResult {
        self.sessions.close(session);
        CloseSessionResult {
            status: CloseStatus::Closed.into(),
        }
    }
}
