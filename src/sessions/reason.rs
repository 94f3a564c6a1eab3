//! Why a session ended: a stable code for programs and a sentence for people.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    TimeoutReached,
    LimitReached,
    LoggedOut,
    Revoked,
    MaxAgeReached,
    PasswordChanged,
    UserDisabled,
    /// The token matches no session; never stored.
    InvalidToken,
}

impl EndReason {
    pub const ALL: [EndReason; 8] = [
        EndReason::TimeoutReached,
        EndReason::LimitReached,
        EndReason::LoggedOut,
        EndReason::Revoked,
        EndReason::MaxAgeReached,
        EndReason::PasswordChanged,
        EndReason::UserDisabled,
        EndReason::InvalidToken,
    ];

    pub fn code(self) -> &'static str {
        match self {
            EndReason::TimeoutReached => "timeout_reached",
            EndReason::LimitReached => "limit_reached",
            EndReason::LoggedOut => "logged_out",
            EndReason::Revoked => "revoked",
            EndReason::MaxAgeReached => "max_age_reached",
            EndReason::PasswordChanged => "password_changed",
            EndReason::UserDisabled => "user_disabled",
            EndReason::InvalidToken => "invalid_token",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            EndReason::TimeoutReached => "Token is expired.",
            EndReason::LimitReached => "The maximum number of allowed sessions for this user has been exceeded.",
            EndReason::LoggedOut => "The session was logged out.",
            EndReason::Revoked => "The session was revoked.",
            EndReason::MaxAgeReached => "The session reached its maximum lifetime.",
            EndReason::PasswordChanged => "The password for this user was changed.",
            EndReason::UserDisabled => "User inactive or deleted.",
            EndReason::InvalidToken => "Invalid token.",
        }
    }

    pub fn from_code(code: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| r.code() == code)
    }
}
