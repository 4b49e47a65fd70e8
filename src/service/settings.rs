//! Session settings: the part of DataFusion's configuration a client may change for its own
//! session, with `SET`/`RESET` statements or the SetSessionOptions action.
//!
//! Settings travel in statement handles and tickets (so any replica runs a statement the way
//! its session asked), which makes them client input like any other: they are checked against
//! [`SETTABLE`] every time they are applied, not only when they are set. Nothing that changes
//! the server's resources is settable (`datafusion.runtime.*` would swap the memory pool and
//! spill directory, `datafusion.execution.*` sizes and parallelism, the parser's recursion
//! limit guards the stack).

use std::collections::BTreeMap;

use datafusion::arrow::array::timezone::Tz;
use datafusion::catalog::information_schema::INFORMATION_SCHEMA;
use datafusion::common::config::ConfigOptions;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{LogicalPlan, ResetVariable, SetVariable, Statement};
use datafusion::prelude::SessionContext;
use tonic::Code;

/// Settings by DataFusion configuration key, e.g. `datafusion.execution.time_zone` → `+01:00`.
pub type Settings = BTreeMap<String, String>;

/// The configuration key of the session's current catalog (session option `catalog`).
pub const CATALOG: &str = "datafusion.catalog.default_catalog";
/// The configuration key of the session's current schema (session option `schema`).
pub const SCHEMA: &str = "datafusion.catalog.default_schema";

/// The session's time zone (`now()` and timestamps with a zone).
const TIME_ZONE: &str = "datafusion.execution.time_zone";

/// The settings a client may change for its session. They change how SQL is read and shown,
/// never what the server spends or may touch.
pub const SETTABLE: &[&str] = &[
    CATALOG,
    SCHEMA,
    "datafusion.catalog.information_schema",
    TIME_ZONE,
    "datafusion.explain.format",
    "datafusion.explain.logical_plan_only",
    "datafusion.explain.physical_plan_only",
    "datafusion.explain.show_schema",
    "datafusion.explain.show_sizes",
    "datafusion.explain.show_statistics",
    "datafusion.sql_parser.default_null_ordering",
    "datafusion.sql_parser.dialect",
    "datafusion.sql_parser.enable_ident_normalization",
    "datafusion.sql_parser.parse_float_as_decimal",
    "datafusion.sql_parser.support_varchar_with_length",
];

/// Longest value a setting may have: names, time zones and dialects are short.
pub const MAX_VALUE_BYTES: usize = 1024;

/// Why a setting cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// A real setting, but one that belongs to the server's operator.
    #[error(
        "'{0}' cannot be changed by clients (it belongs to the server's configuration); \
         a session may set: {settable}",
        settable = SETTABLE.join(", ")
    )]
    NotSettable(String),
    /// No such setting.
    #[error("unknown setting '{0}'; a session may set: {settable}", settable = SETTABLE.join(", "))]
    Unknown(String),
    /// The value is not one the setting takes.
    #[error("invalid value for {key}: {reason}")]
    InvalidValue {
        /// The setting.
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
}

impl SettingError {
    /// The gRPC code: a setting reserved to the operator is PERMISSION_DENIED, the rest are
    /// mistakes in what the client sent.
    pub fn code(&self) -> Code {
        match self {
            Self::NotSettable(_) => Code::PermissionDenied,
            Self::Unknown(_) | Self::InvalidValue { .. } => Code::InvalidArgument,
        }
    }
}

/// A change a `SET` or `RESET` statement makes: the key, and its new value (`None`: back to
/// the server's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The configuration key.
    pub key: String,
    /// The new value, or `None` to reset it.
    pub value: Option<String>,
}

impl Change {
    /// The change a plan makes to its session, if it is a `SET` or `RESET` statement.
    pub fn of_plan(plan: &LogicalPlan) -> Option<Self> {
        match plan {
            LogicalPlan::Statement(Statement::SetVariable(SetVariable { variable, value })) => {
                Some(Self {
                    key: variable.clone(),
                    value: Some(value.clone()),
                })
            }
            LogicalPlan::Statement(Statement::ResetVariable(ResetVariable { variable })) => {
                Some(Self {
                    key: variable.clone(),
                    value: None,
                })
            }
            _ => None,
        }
    }
}

/// Checks that `key` is settable and `value` is a value it takes. `current` is the session as
/// it is now (catalog and schema must exist in it).
pub fn check(current: &SessionContext, key: &str, value: &str) -> Result<(), SettingError> {
    check_key(key)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(SettingError::InvalidValue {
            key: key.to_string(),
            reason: format!(
                "the value is {} bytes long; settings take at most {MAX_VALUE_BYTES}",
                value.len()
            ),
        });
    }
    let mut scratch: ConfigOptions = current.state().config_options().as_ref().clone();
    scratch
        .set(key, value)
        .map_err(|error| SettingError::InvalidValue {
            key: key.to_string(),
            reason: error.strip_backtrace(),
        })?;
    if key == TIME_ZONE && !value.is_empty() {
        // DataFusion takes any string and fails later, in every query of the session.
        value
            .parse::<Tz>()
            .map_err(|error| SettingError::InvalidValue {
                key: key.to_string(),
                reason: error.to_string(),
            })?;
    }
    let missing = |what: &str| SettingError::InvalidValue {
        key: key.to_string(),
        reason: format!("{what} '{value}' does not exist"),
    };
    if key == CATALOG && current.catalog(value).is_none() {
        return Err(missing("catalog"));
    }
    if key == SCHEMA {
        let catalog = &scratch.catalog.default_catalog;
        let schema = current
            .catalog(catalog)
            .and_then(|catalog| catalog.schema(value));
        // information_schema is served beside each catalog's schemas, not in them.
        let information_schema = value == INFORMATION_SCHEMA
            && scratch.catalog.information_schema
            && current.catalog(catalog).is_some();
        if schema.is_none() && !information_schema {
            return Err(missing(&format!("in catalog '{catalog}', schema")));
        }
    }
    Ok(())
}

/// Checks that `key` is one of the settings a session may change.
pub fn check_key(key: &str) -> Result<(), SettingError> {
    if SETTABLE.contains(&key) {
        return Ok(());
    }
    let known = key.starts_with("datafusion.runtime.")
        || ConfigOptions::default()
            .entries()
            .iter()
            .any(|entry| entry.key == key);
    Err(if known {
        SettingError::NotSettable(key.to_string())
    } else {
        SettingError::Unknown(key.to_string())
    })
}

/// Applies `settings` to `ctx` (a request's own context), checking each key again: settings
/// come back from clients inside tickets and handles.
pub fn apply(ctx: &SessionContext, settings: &Settings) -> Result<(), SettingError> {
    if settings.is_empty() {
        return Ok(());
    }
    let state = ctx.state_ref();
    let mut state = state.write();
    for (key, value) in settings {
        check_key(key)?;
        state
            .config_mut()
            .options_mut()
            .set(key, value)
            .map_err(|error| SettingError::InvalidValue {
                key: key.clone(),
                reason: error.strip_backtrace(),
            })?;
    }
    // Functions that read the configuration (now() and the session time zone) see the change.
    let options = state.config().options().clone();
    let updated: Vec<_> = state
        .scalar_functions()
        .values()
        .filter_map(|udf| udf.inner().with_updated_config(&options))
        .collect();
    for udf in updated {
        state
            .register_udf(std::sync::Arc::new(udf))
            .map_err(|error| SettingError::InvalidValue {
                key: "function configuration".into(),
                reason: error.strip_backtrace(),
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_resources_are_not_settable() {
        let ctx = SessionContext::new();
        for key in [
            "datafusion.runtime.memory_limit",
            "datafusion.runtime.temp_directory",
            "datafusion.execution.target_partitions",
            "datafusion.execution.batch_size",
            "datafusion.sql_parser.recursion_limit",
        ] {
            let err = check(&ctx, key, "1").unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{key}: {err}");
        }
        let err = check(&ctx, "datafusion.execution.no_such_thing", "1").unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    }

    #[test]
    fn values_are_checked_for_their_setting() {
        let ctx = SessionContext::new();
        check(&ctx, TIME_ZONE, "+01:00").unwrap();
        check(&ctx, TIME_ZONE, "Europe/Berlin").unwrap();
        let err = check(&ctx, TIME_ZONE, "not a zone").unwrap_err();
        assert!(err.to_string().contains("Invalid timezone"), "{err}");
        check(&ctx, SCHEMA, "public").unwrap();
        check(&ctx, CATALOG, "datafusion").unwrap();
        let err = check(
            &ctx,
            "datafusion.sql_parser.parse_float_as_decimal",
            "maybe",
        );
        assert_eq!(err.unwrap_err().code(), Code::InvalidArgument);
        let err = check(&ctx, SCHEMA, "nope").unwrap_err();
        assert!(
            err.to_string().contains("schema 'nope' does not exist"),
            "{err}"
        );
        let err = check(&ctx, CATALOG, "nope").unwrap_err();
        assert!(
            err.to_string().contains("catalog 'nope' does not exist"),
            "{err}"
        );
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(check(&ctx, TIME_ZONE, &long).is_err());
    }

    #[tokio::test]
    async fn applied_settings_change_how_sql_is_read() {
        let ctx = SessionContext::new();
        let settings = Settings::from([(
            "datafusion.sql_parser.parse_float_as_decimal".to_string(),
            "true".to_string(),
        )]);
        apply(&ctx, &settings).unwrap();
        let frame = ctx.sql("SELECT 1.5 AS x").await.unwrap();
        let data_type = frame.schema().field(0).data_type().clone();
        assert!(
            matches!(
                data_type,
                datafusion::arrow::datatypes::DataType::Decimal128(..)
            ),
            "{data_type}"
        );
        let forged = Settings::from([("datafusion.runtime.memory_limit".into(), "1T".into())]);
        assert_eq!(
            apply(&ctx, &forged).unwrap_err().code(),
            Code::PermissionDenied
        );
    }
}
