//! The one error body every HTTP endpoint returns.

use serde::{Deserialize, Serialize};

/// `{error, detail, field?}`: `error` is a stable machine-readable code,
/// `detail` a sentence for people, `field` the offending input path if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `invalid_field`, `not_found`, `forbidden`.
    pub error: String,
    /// Human-readable explanation.
    pub detail: String,
    /// Path of the offending input field (`input.ms`, `priority`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
