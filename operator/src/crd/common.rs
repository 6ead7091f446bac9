//! Types shared by both custom resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Larder resource.
pub const GROUP: &str = "larder.dev";

/// The API version the operator serves and stores.
pub const VERSION: &str = "v1alpha1";

/// A key inside a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}
