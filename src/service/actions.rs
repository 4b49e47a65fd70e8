//! The DoAction actions flightbear offers: one table that feeds both DoAction and ListActions.

use arrow_flight::ActionType;

/// An action flightbear understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Flight SQL CreatePreparedStatement.
    CreatePreparedStatement,
    /// Flight SQL ClosePreparedStatement.
    ClosePreparedStatement,
    /// Flight CancelFlightInfo.
    CancelFlightInfo,
    /// Flight SetSessionOptions.
    SetSessionOptions,
    /// Flight GetSessionOptions.
    GetSessionOptions,
    /// Flight CloseSession.
    CloseSession,
}

/// Every action: its kind, its wire name and the description ListActions gives.
const ACTIONS: &[(ActionKind, &str, &str)] = &[
    (
        ActionKind::CreatePreparedStatement,
        "CreatePreparedStatement",
        "Creates a prepared statement. Request: ActionCreatePreparedStatementRequest; \
         response: ActionCreatePreparedStatementResult",
    ),
    (
        ActionKind::ClosePreparedStatement,
        "ClosePreparedStatement",
        "Closes a prepared statement. Request: ActionClosePreparedStatementRequest",
    ),
    (
        ActionKind::CancelFlightInfo,
        "CancelFlightInfo",
        "Cancels a query. Request: CancelFlightInfoRequest; response: CancelFlightInfoResult",
    ),
    (
        ActionKind::SetSessionOptions,
        "SetSessionOptions",
        "Sets options of the session (catalog, schema, settings), starting one if needed. \
         Request: SetSessionOptionsRequest; response: SetSessionOptionsResult",
    ),
    (
        ActionKind::GetSessionOptions,
        "GetSessionOptions",
        "The options of the session. Request: GetSessionOptionsRequest; \
         response: GetSessionOptionsResult",
    ),
    (
        ActionKind::CloseSession,
        "CloseSession",
        "Ends the session. Request: CloseSessionRequest; response: CloseSessionResult",
    ),
];

impl ActionKind {
    /// The action with this wire name, if flightbear offers it.
    pub fn named(name: &str) -> Option<Self> {
        ACTIONS
            .iter()
            .find(|(_, action_name, _)| *action_name == name)
            .map(|(kind, _, _)| *kind)
    }
}

/// What ListActions answers.
pub fn action_types() -> Vec<ActionType> {
    ACTIONS
        .iter()
        .map(|(_, name, description)| ActionType {
            r#type: (*name).to_string(),
            description: (*description).to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_action_is_understood_by_its_name() {
        let listed = action_types();
        assert_eq!(listed.len(), 6);
        for action in listed {
            assert!(ActionKind::named(&action.r#type).is_some(), "{action:?}");
        }
        assert_eq!(ActionKind::named("DropEverything"), None);
    }
}
